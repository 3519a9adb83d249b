"""The demo county of 宁川县: fixed names and places, and deterministic generators for the rest.

Everything random comes from one seeded `random.Random`, so two loads produce the same
county (only the database ids differ).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from gongjian.core.validators import credit_code_check_char, id_number_check_char

SEED = 2026
PASSWORD = "Demo@2026"

# Administrative division code used in the demo's credit codes (a county under 宁波市, 浙江).
DIVISION = "330226"
# Where the county seat sits (the demo's grid cells are laid out around it).
CENTER_LAT = 29.8700
CENTER_LNG = 121.5500

@dataclass(frozen=True)
class OrgSpec:
    name: str
    short_name: str
    code: str
    address: str | None = None


COUNTY = OrgSpec("中共宁川县委员会", "宁川县委", "NC-COUNTY", "宁川县城中街道人民路1号")
# Above the communities: the committees holding the party orgs of agencies, institutions and state firms.
ORGANS_COMMITTEE = OrgSpec("中共宁川县直属机关工作委员会", "县直机关工委", "NC-ORGANS")
SOE_COMMITTEE = OrgSpec("中共宁川县国资委委员会", "县国资委党委", "NC-SOE")


@dataclass(frozen=True)
class UnitSpec:
    key: str
    name: str
    type: str  # agency | soe | institution | private | social_org
    # 统一社会信用代码: registration authority + category (11 机关, 12 事业单位, 91 企业, 51 社团, 52 民非)
    authority: str
    party_mode: str  # none | single | joint | attached
    party_org: str | None  # name of the unit's own party org (single) or None
    contact: str
    address: str
    liaison: bool = False


@dataclass(frozen=True)
class CommunitySpec:
    key: str
    name: str
    short_name: str
    code: str
    address: str
    # offset of the community's block from the county centre, in degrees (lat, lng)
    offset: tuple[float, float]
    cells: int
    estates: tuple[str, ...]
    units: tuple[UnitSpec, ...] = field(default_factory=tuple)

    @property
    def org(self) -> OrgSpec:
        return OrgSpec(self.name, self.short_name, self.code, self.address)


@dataclass(frozen=True)
class StreetSpec:
    key: str
    name: str
    short_name: str
    code: str
    address: str
    communities: tuple[CommunitySpec, ...]

    @property
    def org(self) -> OrgSpec:
        return OrgSpec(self.name, self.short_name, self.code, self.address)


def _u(key: str, name: str, type_: str, authority: str, party_mode: str, party_org: str | None,
       contact: str, address: str, liaison: bool = False) -> UnitSpec:
    return UnitSpec(key, name, type_, authority, party_mode, party_org, contact, address, liaison)


STREETS: tuple[StreetSpec, ...] = (
    StreetSpec(
        "chengzhong", "中共宁川县城中街道工作委员会", "城中街道党工委", "NC-CZ", "宁川县人民路88号",
        (
            CommunitySpec(
                "donghu", "中共宁川县城中街道东湖社区委员会", "东湖社区党委", "NC-CZ-DH", "东湖路16号",
                (0.006, 0.010), 4, ("东湖花园", "湖景苑", "柳岸新村", "东湖小区"),
                (
                    _u("czj", "宁川县财政局", "agency", "11", "single", "宁川县财政局机关党支部",
                       "陈建国", "东湖路2号", liaison=True),
                    _u("gdgs", "国网宁川县供电公司城东供电所", "soe", "91", "single",
                       "国网宁川县供电公司城东供电所党支部", "周海波", "东湖路58号"),
                    _u("yz", "宁川县第一中学", "institution", "12", "single", "宁川县第一中学党总支",
                       "林晓燕", "学府路1号"),
                    _u("rjkj", "宁川东湖软件科技有限公司", "private", "91", "joint", None,
                       "王磊", "东湖创业园3幢"),
                    _u("lelq", "宁川县东湖乐龄志愿服务中心", "social_org", "52", "attached", None,
                       "张桂英", "东湖路16号社区服务中心二楼"),
                ),
            ),
            CommunitySpec(
                "taoyuan", "中共宁川县城中街道桃源社区委员会", "桃源社区党委", "NC-CZ-TY", "桃源路121号",
                (0.006, -0.006), 3, ("桃源新村", "桃园里", "锦绣桃源"),
                (
                    _u("rmyy", "宁川县人民医院", "institution", "12", "single", "宁川县人民医院党委",
                       "赵卫东", "桃源路200号"),
                    _u("nsyh", "宁川农村商业银行股份有限公司桃源支行", "soe", "91", "single",
                       "宁川农商银行桃源支行党支部", "孙丽华", "桃源路88号"),
                    _u("tywy", "宁川桃源物业服务有限公司", "private", "91", "joint", None,
                       "吴志强", "桃源新村物业楼"),
                    _u("sgs", "宁川县桃源社会工作服务社", "social_org", "52", "attached", None,
                       "郑婷", "桃源路121号"),
                ),
            ),
            CommunitySpec(
                "wenchang", "中共宁川县城中街道文昌社区委员会", "文昌社区党委", "NC-CZ-WC", "文昌巷9号",
                (-0.006, 0.002), 5, ("文昌苑", "书香门第", "文昌新村", "学士府", "文庙小区"),
                (
                    _u("jyj", "宁川县教育局", "agency", "11", "single", "宁川县教育局机关党委",
                       "钱伟", "文昌路6号"),
                    _u("syxx", "宁川县文昌实验小学", "institution", "12", "single",
                       "宁川县文昌实验小学党支部", "何美玲", "文昌巷30号"),
                    _u("ctjt", "宁川县城市建设投资集团有限公司", "soe", "91", "single",
                       "宁川县城投集团党委", "冯志刚", "文昌路188号"),
                    _u("sfxh", "宁川县书法家协会", "social_org", "51", "attached", None,
                       "许文博", "文昌巷9号文化家园"),
                ),
            ),
        ),
    ),
    StreetSpec(
        "jiangbei", "中共宁川县江北街道工作委员会", "江北街道党工委", "NC-JB", "宁川县江北大道301号",
        (
            CommunitySpec(
                "beimen", "中共宁川县江北街道北门社区委员会", "北门社区党委", "NC-JB-BM", "北门街45号",
                (0.022, 0.000), 4, ("北门小区", "永安里", "北城华府", "双桥新村"),
                (
                    _u("scj", "宁川县市场监督管理局", "agency", "11", "single",
                       "宁川县市场监督管理局机关党支部", "郭俊", "北门街2号"),
                    _u("zyy", "宁川县中医院", "institution", "12", "single", "宁川县中医院党总支",
                       "马秀兰", "北门街160号"),
                    _u("bmsm", "宁川北门商贸有限公司", "private", "91", "single",
                       "宁川北门商贸有限公司党支部", "罗斌", "北门街77号"),
                    _u("lhh", "宁川县北门邻里互助会", "social_org", "51", "attached", None,
                       "高红梅", "北门街45号"),
                    _u("yzbm", "中国邮政集团有限公司宁川县北门营业部", "soe", "91", "none", None,
                       "梁晨", "北门街12号"),
                ),
            ),
            CommunitySpec(
                "binjiang", "中共宁川县江北街道滨江社区委员会", "滨江社区党委", "NC-JB-BJ", "滨江路66号",
                (0.022, 0.016), 3, ("滨江花苑", "江湾名邸", "滨江一号"),
                (
                    _u("slj", "宁川县水利局", "agency", "11", "single", "宁川县水利局机关党支部",
                       "宋建军", "滨江路3号"),
                    _u("gwjt", "宁川港务集团有限公司", "soe", "91", "single", "宁川港务集团有限公司党委",
                       "唐海峰", "滨江路210号"),
                    _u("xcl", "宁川滨江新材料股份有限公司", "private", "91", "single",
                       "宁川滨江新材料股份有限公司党支部", "韩雪", "江北工业园8号"),
                    _u("hfsg", "宁川县滨江红帆社会工作服务中心", "social_org", "52", "none", None,
                       "曹颖", "滨江路66号"),
                ),
            ),
        ),
    ),
)

# Branches every community committee holds (members sit in these).
COMMUNITY_BRANCHES = ("第一党支部", "第二党支部", "离退休党员党支部")

NUMERALS = "一二三四五六七八九"
MEMBERS = 200
# The `member` login is a teacher of this unit living in 东湖 (and reported there: 双报到).
MEMBER_EMPLOYER = "syxx"

# Logins, one per role (see README); `where` names a community key or a unit key.
DEMO_USERS: tuple[tuple[str, str, str, str | None], ...] = (
    ("admin", "平台管理员", "platform_admin", None),
    ("street", "王建华", "org_staff", "street:chengzhong"),  # 城中街道党工委 组织委员
    ("secretary", "陈丽华", "org_admin", "community:donghu"),  # 东湖社区党委书记
    ("gridworker", "刘洋", "grid_worker", "community:donghu"),  # 东湖社区第一网格 网格员
    ("liaison", "陈建国", "unit_liaison", "unit:czj"),  # 宁川县财政局 联络员
    ("member", "林晓东", "member", "unit_party_org:syxx"),  # 文昌实验小学教师，住在东湖，已报到
    ("resident", "张秀英", "resident", "community:donghu"),  # 东湖花园居民
    ("secretary2", "周海燕", "org_admin", "community:beimen"),  # 北门社区党委书记
)

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁"
    "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴孔汤"
)
GIVEN_MALE = (
    "伟", "强", "磊", "军", "勇", "杰", "涛", "明", "超", "刚", "平", "辉", "建华", "建国", "志强", "海波",
    "国庆", "文斌", "晓东", "俊杰", "浩", "宇", "鹏", "斌", "建军", "永刚", "立新", "家豪", "子轩", "宏伟",
)
GIVEN_FEMALE = (
    "芳", "娜", "秀英", "敏", "静", "丽", "艳", "娟", "霞", "秀兰", "桂英", "玉兰", "红梅", "晓燕", "丽华",
    "婷", "颖", "佳怡", "欣怡", "雪", "美玲", "慧敏", "春燕", "海燕", "雅琴", "梦瑶", "淑珍", "凤英", "思琪",
)
# Birthplaces: mostly local (宁波 districts/counties), some from elsewhere (floating members).
LOCAL_DIVISIONS = ("330226", "330203", "330205", "330206", "330211", "330212", "330225", "330281", "330282")
OTHER_DIVISIONS = ("341221", "510722", "412723", "362322", "430524", "522121")
PHONE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
                  "153", "155", "157", "158", "159", "177", "180", "181", "182", "186", "187", "188", "189",
                  "191", "199")

# GB 11714 organization code: weights and character values (digits, then A=10 ... Z=35).
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # the characters also allowed in a credit code


def _org_value(c: str) -> int:
    return int(c) if c.isdigit() else ord(c) - ord("A") + 10


def organization_code(rng: random.Random, enterprise: bool) -> str:
    """A 9-character organization code with a valid GB 11714 check character.

    Newer enterprise codes start with 'MA' like the ones issued since 2015."""
    while True:
        if enterprise:
            body = "MA" + "".join(rng.choice(_ORG_CHARS) for _ in range(6))
        else:
            body = "".join(rng.choice("0123456789") for _ in range(8))
        rest = 11 - sum(_org_value(c) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True)) % 11
        check = "0" if rest == 11 else "X" if rest == 10 else str(rest)
        return body + check


def credit_code(rng: random.Random, authority: str) -> str:
    """A unified social credit code (GB 32100) with a valid check character."""
    first17 = authority + DIVISION + organization_code(rng, enterprise=authority.startswith("9"))
    return first17 + credit_code_check_char(first17)


def person_name(rng: random.Random, male: bool) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN_MALE if male else GIVEN_FEMALE)


def id_number(rng: random.Random, birth: date, male: bool, local: bool = True) -> str:
    division = rng.choice(LOCAL_DIVISIONS if local else OTHER_DIVISIONS)
    order = rng.randrange(0, 500) * 2 + (1 if male else 0)  # odd: male, even: female
    first17 = f"{division}{birth:%Y%m%d}{order:03d}"
    return first17 + id_number_check_char(first17)


def phone(rng: random.Random) -> str:
    return rng.choice(PHONE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def birth_date(rng: random.Random, first_year: int, last_year: int) -> date:
    start = date(first_year, 1, 1)
    span = (date(last_year, 12, 31) - start).days
    return start + timedelta(days=rng.randrange(span))


# --- geography: real-looking, non-overlapping cells inside each community's block --------------

# A community block is about 1.2 km (north-south) by 1.3 km (east-west) at this latitude.
BLOCK_LAT = 0.0110
BLOCK_LNG = 0.0135

Point = tuple[float, float]  # (lng, lat), GeoJSON order


# How a block splits into 3, 4 or 5 cells: lattice columns, and per cell (row, first column, columns spanned).
LAYOUTS: dict[int, tuple[int, tuple[tuple[int, int, int], ...]]] = {
    3: (2, ((0, 0, 2), (1, 0, 1), (1, 1, 1))),
    4: (2, ((0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1))),
    5: (3, ((0, 0, 1), (0, 1, 1), (0, 2, 1), (1, 0, 2), (1, 2, 1))),
}


def cell_polygons(rng: random.Random, offset: tuple[float, float], cells: int) -> list[list[Point]]:
    """Closed rings (lng, lat) for `cells` cells tiling one community block without overlap.

    The block is a lattice of jittered points; each shared edge gets a jittered midpoint that both
    neighbours use, so the cells meet exactly along streets that look hand-drawn."""
    cols, layout = LAYOUTS[cells]
    rows = 2
    lat0 = CENTER_LAT + offset[0] - BLOCK_LAT / 2
    lng0 = CENTER_LNG + offset[1] - BLOCK_LNG / 2
    dlat, dlng = BLOCK_LAT / rows, BLOCK_LNG / cols

    def jitter(scale: float) -> float:
        return rng.uniform(-scale, scale)

    lattice: dict[tuple[int, int], Point] = {}
    for r in range(rows + 1):
        for c in range(cols + 1):
            lat = lat0 + r * dlat + (jitter(dlat * 0.12) if 0 < r < rows else 0.0)
            lng = lng0 + c * dlng + (jitter(dlng * 0.12) if 0 < c < cols else 0.0)
            lattice[(r, c)] = (round(lng, 6), round(lat, 6))

    midpoints: dict[tuple[tuple[int, int], tuple[int, int]], Point] = {}

    def mid(a: tuple[int, int], b: tuple[int, int]) -> Point:
        key = (min(a, b), max(a, b))
        if key not in midpoints:
            (x1, y1), (x2, y2) = lattice[key[0]], lattice[key[1]]
            horizontal = key[0][0] == key[1][0]
            x, y = (x1 + x2) / 2, (y1 + y2) / 2
            # bend the edge sideways a little (not on the block's outer boundary)
            outer = (horizontal and key[0][0] in (0, rows)) or (not horizontal and key[0][1] in (0, cols))
            if not outer:
                if horizontal:
                    y += jitter(dlat * 0.08)
                else:
                    x += jitter(dlng * 0.08)
            midpoints[key] = (round(x, 6), round(y, 6))
        return midpoints[key]

    rings: list[list[Point]] = []
    for row, col, span in layout:
        # walk the outline of lattice squares [row, row+1] x [col, col+span] counter-clockwise
        corners: list[tuple[int, int]] = [(row, c) for c in range(col, col + span + 1)]
        corners += [(row + 1, c) for c in range(col + span, col - 1, -1)]
        ring: list[Point] = []
        for i, a in enumerate(corners):
            b = corners[(i + 1) % len(corners)]
            ring.append(lattice[a])
            ring.append(mid(a, b))
        ring.append(ring[0])
        rings.append(ring)
    return rings


def point_in_ring(rng: random.Random, ring: list[Point]) -> Point:
    """A point well inside a cell (near its centroid), for units and buildings."""
    xs = [p[0] for p in ring[:-1]]
    ys = [p[1] for p in ring[:-1]]
    cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
    return (round(cx + rng.uniform(-0.0006, 0.0006), 6), round(cy + rng.uniform(-0.0006, 0.0006), 6))
