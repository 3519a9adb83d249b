"""Every error the API answers, as RFC 9457 problem+json with a stable code.

Services raise `ProblemError(code, **params)`; the code picks the HTTP status and
the message (Chinese by default, English with `Accept-Language: en`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("gongjian.errors")

PROBLEM_TYPE_BASE = "https://gongjian.example/problems/"


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    zh: str
    en: str


ERRORS: dict[str, ErrorSpec] = {
    # 400 / 422: the request itself is wrong
    "validation_error": ErrorSpec(422, "请求参数有误", "The request is invalid"),
    "malformed_request": ErrorSpec(400, "请求格式错误", "The request is malformed"),
    "method_not_allowed": ErrorSpec(405, "该地址不支持此请求方法", "Method not allowed"),
    "invalid_cursor": ErrorSpec(400, "分页游标无效", "The pagination cursor is invalid"),
    "invalid_geometry": ErrorSpec(422, "地理边界无效：{reason}", "Invalid boundary: {reason}"),
    "invalid_party_branch": ErrorSpec(
        422,
        "网格党组织必须是本社区下的党支部或党小组",
        "The grid party branch must be a branch or group in the community",
    ),
    "invalid_credit_code": ErrorSpec(
        422, "统一社会信用代码无效", "Invalid unified social credit code"
    ),
    "invalid_community": ErrorSpec(
        422, "所选党组织不是社区一级的党组织", "The organization is not at community level"
    ),
    "party_org_mismatch": ErrorSpec(
        422,
        "党组织设置不一致：未建立党组织时不能指定党组织，单独组建、联合组建或挂靠时必须指定党组织",
        "party_org_mode 'none' goes with no party_org_id; single, joint and attached need one",
    ),
    "invalid_id_number": ErrorSpec(422, "身份证号码无效", "Invalid ID number"),
    "weak_password": ErrorSpec(
        422,
        "密码至少8位，且包含大写字母、小写字母、数字、符号中的至少三类",
        "Password must be 8+ characters and use at least 3 of: upper case, lower case, digits, symbols",
    ),
    # 401 / 403: who is asking
    "not_authenticated": ErrorSpec(401, "未登录或登录已过期", "Not authenticated"),
    "invalid_token": ErrorSpec(401, "令牌无效或已过期", "The token is invalid or expired"),
    "invalid_credentials": ErrorSpec(401, "用户名或密码错误", "Wrong username or password"),
    "invalid_client": ErrorSpec(401, "客户端凭据无效", "Invalid client credentials"),
    "invalid_grant": ErrorSpec(400, "刷新令牌无效或已失效", "The refresh token is invalid or revoked"),
    "unsupported_grant_type": ErrorSpec(400, "不支持的授权方式", "Unsupported grant type"),
    "invalid_scope": ErrorSpec(400, "申请的权限范围无效：{scope}", "Invalid or unknown scope: {scope}"),
    "wrong_current_password": ErrorSpec(422, "当前密码不正确", "The current password is wrong"),
    "cannot_disable_self": ErrorSpec(409, "不能停用自己的账号", "You cannot disable your own account"),
    "cannot_remove_own_admin": ErrorSpec(
        409, "不能撤销自己的平台管理员角色", "You cannot withdraw your own platform admin role"
    ),
    "account_locked": ErrorSpec(
        423,
        "登录失败次数过多，账号已锁定，请在{minutes}分钟后重试",
        "Too many failed logins; the account is locked for {minutes} more minutes",
    ),
    "account_disabled": ErrorSpec(403, "账号已停用", "The account is disabled"),
    "forbidden": ErrorSpec(403, "没有执行此操作的权限", "You are not allowed to do this"),
    # 404 / 409 / 412: the state of things
    "not_found": ErrorSpec(404, "{object}不存在", "{object} not found"),
    "conflict": ErrorSpec(409, "数据冲突：{reason}", "Conflict: {reason}"),
    "duplicate": ErrorSpec(409, "{object}已存在", "{object} already exists"),
    "illegal_transition": ErrorSpec(
        409, "当前状态“{state}”不能执行“{action}”", "Cannot {action} while {state}"
    ),
    "move_into_descendant": ErrorSpec(
        409,
        "不能把组织移动到它自己或它的下级组织之下",
        "Cannot move an organization under itself or its descendant",
    ),
    "grid_leader_taken": ErrorSpec(409, "该网格已有网格长", "The grid cell already has a grid leader"),
    "grid_cell_not_empty": ErrorSpec(
        409, "网格下还有楼栋，不能删除", "The grid cell still has buildings and cannot be deleted"
    ),
    "has_children": ErrorSpec(
        409, "该组织下还有下级组织或数据，不能删除", "The organization still has children"
    ),
    "invalid_parent": ErrorSpec(
        422, "上级组织类型“{parent_kind}”下不能建立“{kind}”", "A {kind} cannot sit under a {parent_kind}"
    ),
    "precondition_failed": ErrorSpec(
        412, "数据已被他人修改，请刷新后重试", "The object was changed by someone else; reload and retry"
    ),
    "precondition_required": ErrorSpec(
        428, "更新需要携带 If-Match 请求头", "Updates require an If-Match header"
    ),
    "idempotency_in_progress": ErrorSpec(
        409, "相同的请求正在处理中", "A request with this Idempotency-Key is still being processed"
    ),
    "idempotency_mismatch": ErrorSpec(
        422,
        "Idempotency-Key 已用于另一个不同的请求",
        "This Idempotency-Key was used for a different request",
    ),
    "not_a_community": ErrorSpec(422, "所选组织不是社区党组织", "The organization is not a community"),
    "grid_not_in_community": ErrorSpec(
        422, "所选网格不属于居住社区", "The grid cell is not in the residence community"
    ),
    "member_account_linked": ErrorSpec(
        409, "该账号已关联其他党员", "This account is already linked to another member"
    ),
    "member_not_reportable": ErrorSpec(
        409,
        "只有在册的在职党员才能到居住社区报到",
        "Only active in-service members report to their residential community",
    ),
    "reporting_active": ErrorSpec(
        409, "已有一条待审核或已接收的报到记录", "There is already a submitted or accepted reporting"
    ),
    # projects and meetings
    "invalid_project_org": ErrorSpec(
        422, "项目须属于街道或社区党组织", "A project belongs to a street or community organization"
    ),
    "need_outside_project_org": ErrorSpec(
        422, "该需求不属于项目所在的党组织", "The need is not under the project's organization"
    ),
    "decision_required": ErrorSpec(
        409,
        "项目只能由街道或社区召开的联席会议、议事协商会议作出决定后立项或否决",
        "A project is approved or rejected only by a decision of a held meeting",
    ),
    "project_claimed": ErrorSpec(409, "该项目已有牵头单位领办", "The project already has a lead unit"),
    "claim_not_open": ErrorSpec(
        409,
        "该项目暂未向本单位开放领办（结对单位优先，{opens_at}起向全街道开放）",
        "The project is not open to this unit yet (paired units first; open to the street from {opens_at})",
    ),
    "invalid_meeting_org": ErrorSpec(
        422, "会议须由街道或社区党组织召开", "A meeting is held by a street or community organization"
    ),
    "project_outside_meeting_org": ErrorSpec(
        409,
        "该项目不属于本次会议的党组织及其下级，不能由本次会议决定",
        "The project is not under the meeting's organization; this meeting cannot decide it",
    ),
    "decision_exists": ErrorSpec(409, "该议题已作出决定", "This agenda item is already decided"),
    "agenda_item_without_project": ErrorSpec(
        422,
        "该议题未关联项目，不能作出立项或否决决定",
        "The agenda item links no project to approve or reject",
    ),
    "minutes_required": ErrorSpec(409, "发布前须先填写会议纪要", "Write the minutes before publishing them"),
    # resources and needs
    "invalid_grid": ErrorSpec(
        422,
        "所选网格不存在，或不在该组织范围内",
        "The grid cell does not exist or is not under the organization",
    ),
    "grid_not_assigned": ErrorSpec(
        403,
        "网格员只能在自己负责的网格内登记需求",
        "Grid workers record needs only in the grid cells assigned to them",
    ),
    "invalid_duplicate_of": ErrorSpec(
        422, "关联的需求不存在，或不在同一社区", "The linked need does not exist or is in another community"
    ),
    "possible_duplicate": ErrorSpec(
        409,
        "附近已有相似的未办结需求：可关联到已有需求（duplicate_of_id），或确认仍要提交（allow_duplicate）",
        "Similar open needs exist nearby: link to one (duplicate_of_id) or submit anyway (allow_duplicate)",
    ),
    "insufficient_quantity": ErrorSpec(
        409,
        "资源剩余数量不足：仅剩{remaining}{unit}",
        "Not enough of the resource left: only {remaining} {unit}",
    ),
    "quantity_below_committed": ErrorSpec(
        409,
        "已承诺{committed}{unit}，数量不能少于已承诺的数量",
        "{committed} {unit} are committed already; the quantity cannot go below that",
    ),
    "release_exceeds_committed": ErrorSpec(
        409,
        "释放的数量超过已承诺的数量（{committed}{unit}）",
        "Cannot release more than is committed ({committed} {unit})",
    ),
    # co-building agreements
    "invalid_term": ErrorSpec(
        422, "协议期限的结束日期不能早于开始日期", "The term cannot end before it starts"
    ),
    "invalid_placeholder": ErrorSpec(
        422,
        "条款中有无法识别的占位符“{placeholder}”（可用：{allowed}）",
        "Unknown placeholder {placeholder} in a clause (known: {allowed})",
    ),
    "unit_not_in_street": ErrorSpec(
        422,
        "所选驻区单位不存在，或不在该社区所在的街道",
        "The resident unit does not exist or is not in the community's street",
    ),
    "template_inactive": ErrorSpec(409, "该协议模板已停用", "The agreement template is no longer active"),
    "agreement_frozen": ErrorSpec(
        409,
        "协议已发出签署或已生效，内容不能再修改；如需变更，请在生效后发起变更（新版本）",
        "The agreement is sent or in force and cannot be edited; change it by an amendment once active",
    ),
    "agreement_version_open": ErrorSpec(
        409,
        "该协议已有一个正在起草或签署中的版本",
        "This agreement already has a version being drafted or signed",
    ),
    "content_hash_mismatch": ErrorSpec(
        409,
        "您查看的协议内容与当前待签署的版本不一致（已被修改或被新版本取代），请重新查看后再签署",
        "The content you viewed is not the version awaiting signature (changed or superseded); "
        "review it again before signing",
    ),
    "already_signed": ErrorSpec(409, "该方已签署此协议", "This side has already signed the agreement"),
    "not_authorized_signer": ErrorSpec(
        403,
        "只有社区党组织管理员（甲方）或该单位联络员（乙方）可以代表该方签署或处理此协议",
        "Only the community's org admin (party A) or the unit's liaison (party B) acts for that side",
    ),
    "signing_side_required": ErrorSpec(
        422, "您可代表双方签署，请指明签署方（side）", "You may act for both sides: say which (side)"
    ),
    "reauthentication_failed": ErrorSpec(
        403,
        "身份确认失败：密码或验证码不正确，或验证码已失效",
        "Re-authentication failed: wrong password, or the code is wrong, used or expired",
    ),
    "invalid_signature_image": ErrorSpec(
        422,
        "手写签名须为不超过{max_kb}KB的PNG或JPEG图片",
        "The handwritten signature must be a PNG or JPEG image of at most {max_kb} KB",
    ),
    "document_not_ready": ErrorSpec(
        409,
        "该协议版本尚未经双方签署生效，还没有签署文本",
        "This version has not been signed by both sides: there is no signed document yet",
    ),
    "document_unavailable": ErrorSpec(
        503, "签署文本暂时无法读取，请稍后重试", "The signed document cannot be read right now; retry later"
    ),
    # two-way evaluation (双向评议) and standings
    "evaluation_window_not_open": ErrorSpec(
        409, "本次评议尚未开始，开始时间为{opens_at}", "The evaluation window opens only at {opens_at}"
    ),
    "evaluation_window_closed": ErrorSpec(
        409, "本次评议已于{closes_at}结束，不能再提交", "The evaluation window closed at {closes_at}"
    ),
    "evaluation_already_submitted": ErrorSpec(
        409, "该方已提交过本次评议，不能重复提交", "This side has already submitted its evaluation"
    ),
    "evaluation_not_rater": ErrorSpec(
        403,
        "只有本社区的党组织管理员或专干（评议驻区单位）、该单位的联络员（评议社区）可以提交评议",
        "Only the community's org admin or staff (rating the unit) or the unit's liaison (rating the "
        "community) may submit",
    ),
    "evaluation_side_required": ErrorSpec(
        422, "您可代表双方评议，请指明评议方（side）", "You may rate for both sides: say which (side)"
    ),
    "invalid_scores": ErrorSpec(
        422,
        "评分须覆盖评议细则的每一项，且每项在 0 到该项满分之间",
        "Scores must cover every rubric item, each between 0 and the item's maximum",
    ),
    "evaluation_window_exists": ErrorSpec(
        409, "该协议{year}年度的评议已开启", "The agreement's evaluation for {year} is already open"
    ),
    "agreement_not_in_force": ErrorSpec(
        409, "该协议在{year}年度内未生效，不能开启评议", "The agreement was not in force during {year}"
    ),
    "evaluation_window_started": ErrorSpec(
        409,
        "已有一方提交评议，开始时间不能再修改",
        "A side has already submitted: the opening time cannot change",
    ),
    "invalid_rubric_org": ErrorSpec(
        422, "评议细则只能由县级或街道党组织设定", "Rubrics are set by a county or street organization"
    ),
    "not_a_street": ErrorSpec(422, "所选组织不是街道党组织", "The organization is not a street"),
    # list imports
    "invalid_import_file": ErrorSpec(
        422,
        "导入文件无法读取（{reason}）：请上传清单 JSON 文件或导入模板格式的 XLSX 文件",
        "The import file cannot be read ({reason}): upload the lists JSON or the XLSX template",
    ),
    "payload_too_large": ErrorSpec(413, "请求体过大", "The request body is too large"),
    "internal_error": ErrorSpec(500, "服务器内部错误", "Internal server error"),
    "service_unavailable": ErrorSpec(503, "服务暂不可用", "Service unavailable"),
}

OBJECT_NAMES: dict[str, tuple[str, str]] = {
    "organization": ("党组织", "Organization"),
    "resident_unit": ("驻区单位", "Resident unit"),
    "grid_cell": ("网格", "Grid cell"),
    "grid_assignment": ("网格人员", "Grid assignment"),
    "building": ("楼栋", "Building"),
    "member": ("党员", "Member"),
    "reporting": ("报到记录", "Reporting"),
    "user": ("用户", "User"),
    "api_client": ("API 客户端", "API client"),
    "committee_member": ("兼职委员", "Committee member"),
    "role_assignment": ("角色授权", "Role assignment"),
    "project": ("项目", "Project"),
    "commitment": ("资源承诺", "Resource commitment"),
    "milestone": ("项目节点", "Milestone"),
    "project_need": ("项目关联需求", "Project need"),
    "meeting": ("会议", "Meeting"),
    "agenda_item": ("会议议题", "Agenda item"),
    "notification": ("通知", "Notification"),
    "resource": ("资源", "Resource"),
    "need": ("需求", "Need"),
    "list_import": ("导入任务", "Import"),
    "agreement": ("共建协议", "Agreement"),
    "agreement_template": ("协议模板", "Agreement template"),
    "evaluation_window": ("评议", "Evaluation window"),
    "evaluation_rubric": ("评议细则", "Evaluation rubric"),
    "object": ("对象", "Object"),
}


class ProblemError(Exception):
    """Raised anywhere below a router; turned into problem+json by the handler."""

    def __init__(
        self,
        code: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        candidates: list[dict[str, Any]] | None = None,
        **params: Any,
    ) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code}")
        self.code = code
        self.params = params
        self.errors = errors
        self.headers = headers
        self.candidates = candidates
        super().__init__(code)

    @property
    def status(self) -> int:
        return ERRORS[self.code].status


def not_found(obj: str = "object") -> ProblemError:
    return ProblemError("not_found", object=obj)


def illegal_transition(state: str, action: str) -> ProblemError:
    return ProblemError("illegal_transition", state=state, action=action)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=[PROBLEM_TYPE_BASE + "not_found"])
    title: str
    status: int
    code: str = Field(description="Stable machine-readable error code")
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Field-level errors")
    candidates: list[dict[str, Any]] | None = Field(
        default=None,
        description="`possible_duplicate`: the open needs the new one may repeat (id, title, state, "
        "created_at, score, ...), most similar first",
    )


def wants_english(request: Request) -> bool:
    """English when Accept-Language prefers it over Chinese (q-values honoured); Chinese otherwise."""
    best_q, english = 0.0, False
    for part in request.headers.get("accept-language", "").split(",")[:20]:
        lang, _, params = part.strip().partition(";")
        lang = lang.strip().lower()
        q = 1.0
        params = params.strip().replace(" ", "")
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if not (lang.startswith("en") or lang.startswith("zh")) or q <= best_q:
            continue
        best_q, english = q, lang.startswith("en")
    return english


def _localize_params(params: dict[str, Any], english: bool) -> dict[str, Any]:
    out = dict(params)
    if "object" in out and out["object"] in OBJECT_NAMES:
        out["object"] = OBJECT_NAMES[out["object"]][1 if english else 0]
    return out


def problem_response(
    request: Request,
    code: str,
    *,
    params: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    candidates: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    spec = ERRORS[code]
    english = wants_english(request)
    template = spec.en if english else spec.zh
    try:
        detail = template.format(**_localize_params(params or {}, english))
    except (KeyError, IndexError):
        detail = template
    body = Problem(
        type=PROBLEM_TYPE_BASE + code,
        # The same for every occurrence of the type (RFC 9457): the English message, or the HTTP
        # reason phrase when that message has blanks to fill in.
        title=HTTPStatus(spec.status).phrase if "{" in spec.en else spec.en,
        status=spec.status,
        code=code,
        detail=detail,
        instance=request.url.path,
        request_id=getattr(request.state, "request_id", None),
        errors=errors,
        candidates=candidates,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=spec.status,
        media_type="application/problem+json",
        headers=headers,
    )


def _clean_validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        out.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def _is_data_error(exc: DBAPIError) -> bool:
    """SQLSTATE class 22 (data exception), or asyncpg refusing to encode a parameter."""
    import asyncpg

    seen: list[BaseException] = []
    candidate: BaseException | None = exc.orig
    while candidate is not None and candidate not in seen and len(seen) < 5:
        seen.append(candidate)
        if isinstance(candidate, asyncpg.exceptions.DataError):
            return True
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str) and state.startswith("22"):
            return True
        candidate = candidate.__cause__
    return False


_HTTP_CODES = {
    400: "malformed_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    503: "service_unavailable",
}


def _document_cross_cutting(app: FastAPI) -> None:
    """Document, once, what every route inherits rather than declares: a body that is not valid
    JSON answers 400 `malformed_request` (see `_validation` below); an authenticated operation can
    answer 401 and 403; creating POSTs take an `Idempotency-Key` header (core/idempotency.py:
    409 while the first is running, 422 on reuse)."""
    generate = app.openapi

    def problem(description: str) -> dict[str, Any]:
        ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
        return {"description": description,
                "content": {"application/json": ref, "application/problem+json": ref}}

    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Makes a retry safe: the first answer is replayed to a retry with the same key "
        "and body",
        # As core/idempotency.py checks it; an empty value counts as no key.
        "schema": {"type": "string", "maxLength": 200, "pattern": "^[^\\x00-\\x1f\\x7f]*$"},
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path, item in schema.get("paths", {}).items():
                for method, op in item.items():
                    if not isinstance(op, dict):
                        continue
                    responses = op.setdefault("responses", {})
                    if "requestBody" in op:
                        responses.setdefault("400", problem("Malformed request"))
                    if op.get("security"):
                        # core/access.py: a caller without the permission gets 403, wherever it asks.
                        responses.setdefault("401", problem("Not authenticated"))
                        responses.setdefault("403", problem("Not allowed"))
                    creating = method == "post" and path.startswith("/api/v1/")
                    if creating and not path.startswith("/api/v1/auth/"):
                        op.setdefault("parameters", []).append(dict(idempotency_key))
                        responses.setdefault("409", problem("Conflict, or the Idempotency-Key is in flight"))
                        responses.setdefault("422", problem("Validation error, or an Idempotency-Key reused"))
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(request.url.path):
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    _document_cross_cutting(app)

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            request,
            exc.code,
            params=exc.params,
            errors=exc.errors,
            headers=exc.headers,
            candidates=exc.candidates,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(exc)
        code = "malformed_request" if any(e["type"] == "json_invalid" for e in errors) else "validation_error"
        return problem_response(request, code, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "malformed_request")
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        resp = problem_response(
            request, code, params={"object": "object", "reason": str(exc.detail)}, headers=headers or None,
        )
        resp.status_code = exc.status_code
        return resp

    @app.exception_handler(StaleDataError)
    async def _stale(request: Request, exc: StaleDataError) -> JSONResponse:
        return problem_response(request, "precondition_failed")

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # Constraint names follow the metadata naming convention; expose only the name.
        constraint = getattr(getattr(exc.orig, "__cause__", None), "constraint_name", None)
        log.info("integrity error on %s: %s", request.url.path, constraint)
        return problem_response(request, "conflict", params={"reason": constraint or "constraint"})

    @app.exception_handler(DBAPIError)
    async def _dbapi(request: Request, exc: DBAPIError) -> JSONResponse:
        if _is_data_error(exc):
            # The value itself cannot be stored or compared (NUL byte, out of range...): the
            # client's fault, said without echoing the value.
            log.info("data error on %s: %s", request.url.path, type(exc.orig).__name__)
            msg = "a value is not acceptable to the database"
            return problem_response(
                request, "validation_error", errors=[{"loc": ["request"], "msg": msg, "type": "value_error"}]
            )
        log.exception("database error", exc_info=exc)
        return problem_response(request, "service_unavailable")

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(request, "internal_error")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the problem+json errors an operation can answer."""
    descriptions = {
        400: "Malformed request",
        401: "Not authenticated",
        403: "Not allowed",
        404: "Not found (or outside the caller's scope)",
        409: "Conflict or illegal state transition",
        412: "Stale If-Match version",
        413: "Payload too large",
        422: "Validation error",
        423: "Account locked",
        428: "If-Match required",
    }
    # Every operation may answer 422 (a bad parameter, header or body): always documented, so the
    # contract never falls back to FastAPI's default (application/json) validation error shape.
    return {
        s: {
            "model": Problem,
            "description": descriptions.get(s, "Error"),
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in sorted({*statuses, 422})
    }
