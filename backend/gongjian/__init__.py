"""Gongjian (共建): the regional party building platform."""
