"""Synthetic people with known truth, for measuring identity matching (and a Splink-alone baseline).

``generate(n_records, seed)`` returns noisy customer records as they arrive from several touchpoints
(web, app, point of sale, email, call centre) and the truth map record_id -> person. The noise is what
makes matching hard in practice: typos (one or two character edits), swapped first/last names,
nicknames, people who moved (an old and a new address), missing fields, and families who share a
surname, an address and sometimes a phone number (close non-matches). Names follow skewed frequency
distributions from small embedded lists, so common names collide as they do in real data.

``pairwise_scores`` compares a clustering with the truth; ``splink_alone`` is the baseline: Splink with
a plain, default-ish configuration, independent of ``candor.identity.matching``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

SOURCES = ("web", "app", "pos", "email", "callcenter")
FIELDS = ("first_name", "last_name", "email", "phone", "birthday", "street", "city", "postal_code", "country")

# Designed noise rates (per record); tests check the generated data is roughly at these rates.
NOISE = {
    "name_typo": 0.08,  # per name field
    "nickname": 0.10,  # when the first name has a nickname
    "swap_names": 0.03,
    "missing_email": 0.25,
    "missing_phone": 0.30,
    "missing_birthday": 0.30,
    "missing_street": 0.15,
    "missing_postal_code": 0.10,
    "missing_city": 0.10,
    "missing_country": 0.20,
    "email_typo": 0.04,
    "phone_typo": 0.03,
    "family_phone": 0.15,  # a record gives the household phone instead of the person's own
    "birthday_swap_day_month": 0.03,
    "birthday_typo": 0.03,
    "street_typo": 0.10,
    "city_typo": 0.03,
    "old_address": 0.5,  # for people who moved, the share of records with the old address
}
MOVED = 0.3  # share of people with an old and a new address


def _words(text: str) -> list[str]:
    return text.split()


# fmt: off
# Ordered most common first; frequencies follow a Zipf-like curve over the rank.
MALE_NAMES = _words(
    """
    james robert john michael david william richard joseph thomas christopher charles daniel matthew
    anthony mark donald steven andrew paul joshua kenneth kevin brian george timothy ronald jason
    edward jeffrey ryan jacob gary nicholas eric jonathan stephen larry justin scott brandon
    benjamin samuel gregory alexander patrick frank raymond jack dennis jerry tyler aaron jose adam
    nathan henry zachary douglas peter kyle noah ethan jeremy walter christian keith roger terry
    austin sean gerald carl harold dylan arthur lawrence jordan jesse bryan billy bruce gabriel joe
    logan alan juan albert willie elijah wayne randy vincent mason roy ralph bobby russell bradley
    philip eugene louis harry howard liam oliver lucas owen caleb isaac luke hunter connor miguel
    carlos luis
    """
)
FEMALE_NAMES = _words(
    """
    mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty sandra
    margaret ashley kimberly emily donna michelle carol amanda melissa deborah stephanie dorothy
    rebecca sharon laura cynthia amy kathleen angela shirley brenda emma anna pamela nicole samantha
    katherine christine helen debra rachel carolyn janet maria catherine heather diane olivia julie
    joyce victoria ruth virginia lauren kelly christina joan evelyn judith andrea hannah megan
    cheryl jacqueline martha madison teresa gloria sara janice ann kathryn abigail sophia frances
    jean alice judy isabella julia grace amber denise danielle marilyn beverly charlotte natalie
    theresa diana brittany doris kayla alexis lori marie ava mia chloe zoe lily ella
    """
)
SURNAMES = _words(
    """
    smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
    gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
    sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill
    flores green adams nelson baker hall rivera campbell mitchell carter roberts gomez phillips
    evans turner diaz parker cruz edwards collins reyes stewart morris morales murphy cook rogers
    gutierrez ortiz morgan cooper peterson bailey reed kelly howard ramos kim cox ward richardson
    watson brooks chavez wood james bennett gray mendoza ruiz hughes price alvarez castillo sanders
    patel myers long ross foster jimenez powell jenkins perry russell sullivan bell coleman butler
    henderson barnes gonzales fisher vasquez simmons romero jordan patterson alexander hamilton
    graham reynolds griffin wallace moreno west cole hayes bryant herrera gibson ellis tran medina
    aguilar stevens murray ford castro marshall owens harrison fernandez mcdonald woods washington
    kennedy wells vargas henry chen freeman webb tucker guzman burns crawford olson simpson porter
    hunter gordon mendez silva shaw snyder mason dixon munoz hunt hicks holmes palmer wagner black
    robertson boyd rose stone salazar fox warren mills meyer rice schmidt garza daniels ferguson
    nichols stephens soto weaver ryan gardner payne grant dunn kelley spencer hawkins arnold pierce
    vazquez hansen peters santos hart bradley knight elliott cunningham duncan armstrong hudson
    carroll lane riley andrews alvarado ray delgado berry perkins hoffman johnston matthews pena
    richards contreras willis carpenter lawrence sandoval guerrero george chapman rios estrada
    ortega watkins greene nunez wheeler valdez harper burke larson santiago maldonado morrison
    franklin carlson austin dominguez carr lawson jacobs obrien lynch singh vega bishop montgomery
    oliver jensen harvey williamson gilbert dean sims espinoza howell li wong reid hanson le mccoy
    garrett burton fuller wang weber welch rojas lucas marquez fields park yang little banks padilla
    day walsh bowman schultz luna fowler mejia davidson acosta brewer may holland juarez newman
    pearson curtis cortez douglas schneider joseph barrett navarro figueroa keller avila wade molina
    stanley hopkins campos barnett bates chambers caldwell beck lambert miranda byrd craig ayala
    lowe frazier powers neal leonard gregory carrillo sutton fleming rhodes shelton schwartz norris
    jennings watts duran walters cohen mcdaniel moran parks steele vaughn becker holt deleon barker
    terry hale leon hail benson haynes horton miles lyons pham graves bush thornton wolfe warner
    cabrera mckinney mann zimmerman dawson lara fletcher page mccarthy love robles cervantes solis
    erickson reeves chang klein salinas fuentes baldwin daniel simon velasquez hardy higgins aguirre
    lin cummings chandler sharp barber bowen ochoa dennis robbins liu ramsey francis griffith paul
    blair oconnor cardenas pacheco cross calderon quinn moss swanson chan rivas khan rodgers serrano
    fitzgerald rosales stevenson christensen manning gill curry mclaughlin harmon mcgee gross doyle
    garner newton burgess reese walton blake trujillo adkins brady goodman roman webster goodwin
    fischer huang potter delacruz montoya todd wu hines mullins castaneda malone cannon tate mack
    sherman hubbard hodges zhang guerra wolf valencia saunders franco rowe gallagher farmer hammond
    hampton townsend ingram wise gallegos clarke barton
    """
)
NICKNAMES = {
    "robert": ("bob", "rob", "bobby"), "william": ("bill", "will", "billy"), "elizabeth": ("liz", "beth", "liza"),
    "richard": ("rick", "dick", "rich"), "james": ("jim", "jimmy", "jamie"), "john": ("jack", "johnny"),
    "michael": ("mike", "mikey"), "joseph": ("joe", "joey"), "thomas": ("tom", "tommy"),
    "christopher": ("chris",), "charles": ("charlie", "chuck"), "daniel": ("dan", "danny"),
    "matthew": ("matt",), "anthony": ("tony",), "steven": ("steve",), "andrew": ("andy", "drew"),
    "kenneth": ("ken", "kenny"), "timothy": ("tim",), "edward": ("ed", "eddie", "ted"), "jeffrey": ("jeff",),
    "nicholas": ("nick",), "jonathan": ("jon",), "benjamin": ("ben",), "samuel": ("sam",),
    "gregory": ("greg",), "alexander": ("alex",), "patrick": ("pat",), "raymond": ("ray",),
    "gerald": ("gerry", "jerry"), "lawrence": ("larry",), "zachary": ("zach",), "margaret": ("maggie", "peggy"),
    "patricia": ("pat", "patty", "trish"), "jennifer": ("jen", "jenny"), "susan": ("sue", "susie"),
    "jessica": ("jess",), "deborah": ("deb", "debbie"), "katherine": ("kate", "kathy", "katie"),
    "catherine": ("cathy", "cat"), "kimberly": ("kim",), "rebecca": ("becky",), "christine": ("chris",),
    "samantha": ("sam",), "victoria": ("vicky", "tori"), "abigail": ("abby",), "dorothy": ("dot", "dottie"),
    "stephanie": ("steph",), "pamela": ("pam",), "cynthia": ("cindy",), "judith": ("judy",),
    "theresa": ("tess",), "alexis": ("lexi",), "isabella": ("bella",), "frances": ("fran",),
}
STREET_NAMES = _words(
    """
    main oak pine maple cedar elm washington lake hill park view sunset lincoln jackson church river
    highland forest spring meadow willow cherry walnut ridge franklin jefferson madison adams
    chestnut center north south mill valley prospect broad school union grove liberty locust dogwood
    laurel birch sycamore magnolia hickory poplar spruce aspen juniper hawthorn linden orchard
    garden harbor
    """
)
STREET_TYPES = ("street", "avenue", "road", "lane", "drive", "court", "place", "boulevard", "way", "terrace")
CITIES = (
    "new york", "los angeles", "chicago", "houston", "phoenix", "philadelphia", "san antonio", "san diego",
    "dallas", "austin", "jacksonville", "fort worth", "columbus", "charlotte", "indianapolis", "san francisco",
    "seattle", "denver", "washington", "boston", "el paso", "nashville", "detroit", "oklahoma city", "portland",
    "las vegas", "memphis", "louisville", "baltimore", "milwaukee", "albuquerque", "tucson", "fresno",
    "sacramento", "kansas city", "mesa", "atlanta", "omaha", "colorado springs", "raleigh", "long beach",
    "virginia beach", "miami", "oakland", "minneapolis", "tulsa", "bakersfield", "wichita", "arlington",
    "aurora", "tampa", "new orleans", "cleveland", "honolulu", "anaheim", "lexington", "stockton",
    "henderson", "riverside", "saint paul", "newark", "corpus christi", "irvine", "orlando", "cincinnati",
    "santa ana", "greensboro", "pittsburgh", "jersey city", "st louis", "lincoln", "durham", "anchorage",
    "plano", "buffalo", "madison", "chandler", "gilbert", "reno", "fort wayne",
)
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com", "proton.me")
# fmt: on

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_KEYBOARD_NEIGHBOURS = {
    c: n
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    for i, c in enumerate(row)
    for n in [row[max(0, i - 1) : i] + row[i + 1 : i + 2]]
}


def _cumulative(n: int, exponent: float) -> list[float]:
    """Cumulative Zipf weights for ranks 1..n (for ``random.choices(cum_weights=...)``)."""
    return list(itertools.accumulate(1.0 / (rank**exponent) for rank in range(1, n + 1)))


_MALE_CUM = _cumulative(len(MALE_NAMES), 0.9)
_FEMALE_CUM = _cumulative(len(FEMALE_NAMES), 0.9)
_SURNAME_CUM = _cumulative(len(SURNAMES), 0.75)
_CITY_CUM = _cumulative(len(CITIES), 0.8)


def _pick(rng: random.Random, values: Sequence[str], cum: list[float]) -> str:
    return values[bisect.bisect_right(cum, rng.random() * cum[-1])]


def _typo(rng: random.Random, value: str, alphabet: str = _LETTERS) -> str:
    """One or two character edits (substitution, deletion, insertion, transposition)."""
    for _ in range(1 if rng.random() < 0.8 else 2):
        if len(value) < 2:
            return value
        i = rng.randrange(len(value))
        kind = rng.random()
        if kind < 0.4:
            neighbours = _KEYBOARD_NEIGHBOURS.get(value[i], "") if alphabet is _LETTERS else ""
            choice = rng.choice(neighbours or alphabet)
            value = value[:i] + choice + value[i + 1 :]
        elif kind < 0.6:
            value = value[:i] + value[i + 1 :]
        elif kind < 0.8:
            value = value[:i] + rng.choice(alphabet) + value[i:]
        elif i < len(value) - 1:
            value = value[:i] + value[i + 1] + value[i] + value[i + 2 :]
    return value


def _phone(rng: random.Random) -> str:
    return f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"


def _address(rng: random.Random) -> tuple[str, str, str]:
    city_index = bisect.bisect_right(_CITY_CUM, rng.random() * _CITY_CUM[-1])
    street = f"{rng.randint(1, 9999)} {rng.choice(STREET_NAMES)} {rng.choice(STREET_TYPES)}"
    # each city owns a band of postal codes
    postal = f"{10000 + city_index * 1000 + rng.randint(0, 999):05d}"
    return street, CITIES[city_index], postal


def _email(rng: random.Random, first: str, last: str, taken: set[str]) -> str:
    """A new address: mailbox providers give each address to one person only."""
    address = _email_candidate(rng, first, last)
    while address in taken:
        local, _, domain = address.partition("@")
        address = f"{local}{rng.randint(1, 999)}@{domain}"
    taken.add(address)
    return address


def _email_candidate(rng: random.Random, first: str, last: str) -> str:
    style = rng.random()
    if style < 0.4:
        local = f"{first}.{last}"
    elif style < 0.6:
        local = f"{first[0]}{last}"
    elif style < 0.8:
        local = f"{first}{last}{rng.randint(1, 99)}"
    else:
        local = f"{first}_{rng.randint(100, 9999)}"
    return f"{local}@{rng.choice(EMAIL_DOMAINS)}"


def _birthday(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(1940, 2006), rng.randint(1, 12), rng.randint(1, 28)


def _records_per_person(rng: random.Random) -> int:
    x = rng.random()
    return 1 if x < 0.08 else 2 if x < 0.38 else 3 if x < 0.68 else 4 if x < 0.88 else 5


def generate(n_records: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``n_records`` noisy customer records and the truth map record_id -> person index.

    Deterministic for a seed. People live in households (one to four people, sharing a surname and
    an address, sometimes a phone); each person has two to five records on average (a few have one).
    Records are shuffled, and record ids carry no information about the person.
    """
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    truth: dict[str, int] = {}
    person = 0
    taken: set[str] = set()
    n = NOISE
    while len(records) < n_records:
        # one household
        surname = _pick(rng, SURNAMES, _SURNAME_CUM)
        home = _address(rng)
        household_phone = _phone(rng)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            if len(records) >= n_records:
                break
            male = rng.random() < 0.5
            first = _pick(rng, MALE_NAMES, _MALE_CUM) if male else _pick(rng, FEMALE_NAMES, _FEMALE_CUM)
            last = surname if rng.random() < 0.85 else _pick(rng, SURNAMES, _SURNAME_CUM)
            year, month, day = _birthday(rng)
            emails = [_email(rng, first, last, taken)]
            if rng.random() < 0.2:
                emails.append(_email(rng, first, last, taken))
            own_phone = _phone(rng)
            addresses = [home] if rng.random() >= MOVED else [home, _address(rng)]
            user_id = f"u{rng.getrandbits(48):012x}"
            card = f"{rng.getrandbits(40):013d}"
            for _ in range(_records_per_person(rng)):
                if len(records) >= n_records:
                    break
                source = rng.choice(SOURCES)
                f, la = first, last
                if f in NICKNAMES and rng.random() < n["nickname"]:
                    f = rng.choice(NICKNAMES[f])
                if rng.random() < n["name_typo"]:
                    f = _typo(rng, f)
                if rng.random() < n["name_typo"]:
                    la = _typo(rng, la)
                if rng.random() < n["swap_names"]:
                    f, la = la, f
                mail: str | None = rng.choice(emails)
                if mail and rng.random() < n["email_typo"]:
                    local, _, domain = mail.partition("@")
                    mail = f"{_typo(rng, local)}@{domain}"
                phone: str | None = household_phone if rng.random() < n["family_phone"] else own_phone
                if phone and rng.random() < n["phone_typo"]:
                    phone = "+1" + _typo(rng, phone[2:], "0123456789")
                bday: str | None
                d, m = day, month
                if rng.random() < n["birthday_swap_day_month"] and day <= 12:
                    d, m = month, day
                bday = f"{year:04d}-{m:02d}-{d:02d}"
                if rng.random() < n["birthday_typo"]:
                    i = rng.choice((2, 3, 6, 8, 9))
                    bday = bday[:i] + str(rng.randint(0, 9)) + bday[i + 1 :]
                if len(addresses) == 2:
                    street, city, postal = addresses[0] if rng.random() < n["old_address"] else addresses[1]
                else:
                    street, city, postal = addresses[0]
                if rng.random() < n["street_typo"]:
                    street = _typo(rng, street)
                if rng.random() < n["city_typo"]:
                    city = _typo(rng, city)
                record: dict[str, Any] = {
                    "record_id": "",
                    "source": source,
                    "first_name": f.title(),
                    "last_name": la.title(),
                    "email": None if rng.random() < n["missing_email"] else mail,
                    "phone": None if rng.random() < n["missing_phone"] else phone,
                    "birthday": None if rng.random() < n["missing_birthday"] else bday,
                    "street": None if rng.random() < n["missing_street"] else street.title(),
                    "city": None if rng.random() < n["missing_city"] else city.title(),
                    "postal_code": None if rng.random() < n["missing_postal_code"] else postal,
                    "country": None if rng.random() < n["missing_country"] else "US",
                    "user_id": user_id if source in ("web", "app") and rng.random() < 0.7 else None,
                    "loyalty_card": card if source == "pos" and rng.random() < 0.6 else None,
                    "_person": person,
                }
                records.append(record)
            person += 1
    rng.shuffle(records)
    for i, record in enumerate(records):
        record["record_id"] = f"r{i:08d}"
        truth[record["record_id"]] = record.pop("_person")
    return records, truth


def _pairs(count: int) -> int:
    return count * (count - 1) // 2


def pairwise_scores(pred_clusters: dict[str, str], truth: dict[str, int]) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1 of a clustering against the truth.

    Records in ``truth`` but not in ``pred_clusters`` count as singletons. Pairs are counted from the
    sizes of clusters and of their intersections with true clusters, never enumerated.
    """
    predicted: Counter[str] = Counter()
    actual: Counter[int] = Counter()
    both: Counter[tuple[str, int]] = Counter()
    for record_id, person in truth.items():
        cluster = pred_clusters.get(record_id)
        cluster_key = f"c:{cluster}" if cluster is not None else f"s:{record_id}"
        predicted[cluster_key] += 1
        actual[person] += 1
        both[(cluster_key, person)] += 1
    true_positive = sum(_pairs(c) for c in both.values())
    predicted_pairs = sum(_pairs(c) for c in predicted.values())
    actual_pairs = sum(_pairs(c) for c in actual.values())
    precision = true_positive / predicted_pairs if predicted_pairs else 1.0
    recall = true_positive / actual_pairs if actual_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def splink_alone(records: list[dict[str, Any]], threshold: float = 0.9) -> dict[str, str]:
    """The baseline: Splink with a plain configuration (library comparisons, EM), clustered at a threshold.

    Returns record_id -> cluster_id. Kept independent of ``candor.identity.matching`` so that it is a
    fair baseline: no normalisation beyond lower-casing, no custom levels, Splink's own blocking.
    """
    import duckdb
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.WARNING)
    rows = [
        {"unique_id": r["record_id"], **{f: (r.get(f) or None) and str(r[f]).strip().lower() for f in FIELDS}}
        for r in records
    ]
    con = duckdb.connect(":memory:", config={"temp_directory": ""})
    db_api = DuckDBAPI(con)
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.NameComparison("first_name"),
            cl.NameComparison("last_name"),
            cl.DateOfBirthComparison("birthday", input_is_string=True),
            cl.EmailComparison("email"),
            cl.ExactMatch("phone"),
            cl.ExactMatch("postal_code"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("first_name", "last_name"),
            block_on("birthday"),
            block_on("email"),
            block_on("phone"),
            block_on("postal_code", "first_name"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        linker = Linker(db_api.register(rows), settings, log_level=logging.WARNING)
        linker.training.estimate_probability_two_random_records_match(
            [block_on("first_name", "last_name", "birthday"), block_on("email")], recall=0.7
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=1)
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("birthday"))
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("first_name", "last_name"))
        predictions = linker.inference.predict(threshold_match_probability=threshold)
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, threshold)
        result = con.sql(f"select unique_id, cluster_id from {clusters.physical_name}").fetchall()
    con.close()
    return {str(uid): str(cid) for uid, cid in result}
