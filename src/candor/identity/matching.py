"""Probabilistic record matching: which customer records belong to one person.

A Fellegi–Sunter model run by Splink on DuckDB. Records are plain dicts with ``record_id`` and the
fields in ``FIELDS``. ``Model.train`` estimates the model from unlabelled records (λ, u by random
sampling, m by expectation maximisation), ``Model.predict`` scores all candidate pairs of a batch,
``Model.score`` scores one new record against a few candidates (incremental linking), and
``blocking_keys`` gives the short strings by which a caller finds those candidates (it stores only
their HMACs).

Privacy: record values live only in memory. DuckDB runs in-memory with spilling to a temporary
directory disabled and external file access switched off (an out-of-memory error is preferred over
plaintext on disk); Splink runs with table materialisation (never its Parquet mode) and its logging
at WARNING. A saved model (``to_json``) holds parameters and comparison definitions only: term
frequencies are computed from the records of each ``predict`` call and never stored.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa

from candor.identity import fastscore
from candor.normalize import is_junk

__all__ = ["FIELDS", "MatchingError", "Model", "Normalised", "blocking_keys", "normalise_record"]

FIELDS = ("first_name", "last_name", "email", "phone", "birthday", "street", "city", "postal_code", "country")
MIN_TRAINING_RECORDS = 50
# A blocking key shared by more records than this (a placeholder email, a shop's phone) finds no pairs.
MAX_BLOCK_SIZE = 1000
_FORMAT = "candor.identity.matching/1"
_TF_COLUMNS = ("first_name", "last_name", "city")
_CHUNK = 100_000


class MatchingError(Exception):
    """Matching could not run: what was wrong and what to do is in the message (never record values)."""


# --- normalisation ----------------------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_BIRTHDAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_STREET_WORDS = {
    "st": "street",
    "str": "street",
    "ave": "avenue",
    "av": "avenue",
    "rd": "road",
    "ln": "lane",
    "dr": "drive",
    "ct": "court",
    "pl": "place",
    "blvd": "boulevard",
    "ter": "terrace",
    "n": "north",
    "s": "south",
    "e": "east",
    "w": "west",
}


def _fold(value: str) -> str:
    """Case-folded, accents stripped, every run of non-alphanumerics one space."""
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    ascii_ish = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", ascii_ish).strip()


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, str):
        value = str(value)
    value = value.strip()
    if not value or is_junk(value):
        return None
    return value


def _normalise_field(field: str, value: object) -> str | None:
    text = _text(value)
    if text is None:
        return None
    result: str
    if field in ("first_name", "last_name", "city", "country"):
        result = _fold(text)
    elif field == "street":
        result = " ".join(_STREET_WORDS.get(word, word) for word in _fold(text).split())
    elif field == "email":
        result = "".join(text.split()).casefold()
        if "@" not in result:
            return None
    elif field == "phone":
        digits = "".join(c for c in text if c.isascii() and c.isdigit())
        result = ("+" if text.startswith("+") else "") + digits
        if len(digits) < 6:
            return None
    elif field == "birthday":
        result = text[:10]
        if not _BIRTHDAY.fullmatch(result):
            return None
    else:  # postal_code
        result = _fold(text).replace(" ", "")
    # the cleaned value is judged again: "0\x1b" is the placeholder "0" once cleaned (idempotence)
    if not result or is_junk(result):
        return None
    return result


class Normalised(dict[str, str | None]):
    """A record as :func:`normalise_record` returned it. Normalising is idempotent, so one of these is
    passed through as it is: a full resolution normalises each record once (Resolver.records) instead
    of once in training, once in scoring, once for the clusters' evidence and once for the blocking
    keys. Do not change one in place; build a new record instead."""

    __slots__ = ()


def normalise_record(raw: Mapping[str, Any]) -> Normalised:
    """The record ready for comparison: ``record_id`` (if present) and every field in ``FIELDS``.

    Text is trimmed, case-folded and stripped of accents and punctuation (names, street, city,
    country, postal code); street abbreviations are spelled out; emails are lower-cased; phones keep
    the leading ``+`` and digits; a birthday must look like ``YYYY-MM-DD``. Blank, placeholder
    (``null``, ``unknown``, ...) and unusable values become ``None``. Idempotent; never raises.
    A :class:`Normalised` record (what this returns) comes back unchanged, without the work.
    """
    if type(raw) is Normalised:
        return raw
    out = Normalised()
    if raw.get("record_id") is not None:
        out["record_id"] = str(raw["record_id"])
    for field in FIELDS:
        out[field] = _normalise_field(field, raw.get(field))
    return out


# --- nicknames and phonetics ----------------------------------------------------------------------------

# Common English given-name variants; names in one group compare at the "nickname" level.
_NAME_GROUPS = (
    "robert bob rob bobby robbie bert",
    "william bill will billy willie liam",
    "elizabeth liz beth liza betty lizzie eliza libby",
    "richard rick dick rich ricky",
    "james jim jimmy jamie",
    "john jack johnny jon jonathan",
    "michael mike mikey mick",
    "joseph joe joey",
    "thomas tom tommy",
    "christopher chris kit christine christina kristina tina",
    "charles charlie chuck chas",
    "daniel dan danny",
    "matthew matt",
    "anthony tony",
    "steven stephen steve",
    "andrew andy drew",
    "kenneth ken kenny",
    "timothy tim timmy",
    "edward ed eddie ted teddy edwin",
    "jeffrey geoffrey jeff",
    "nicholas nick nicky",
    "benjamin ben benny",
    "samuel sam sammy samantha",
    "gregory greg",
    "alexander alex alexandra alexis lexi sandy",
    "patrick pat patricia patty trish tricia",
    "raymond ray",
    "gerald gerry jerry jerome",
    "lawrence larry laurence",
    "zachary zach zack",
    "margaret maggie peggy meg marge",
    "jennifer jen jenny",
    "susan sue susie suzanne",
    "jessica jess jessie",
    "deborah debra deb debbie",
    "katherine catherine kathryn kate kathy katie cathy cat kat",
    "kimberly kim",
    "rebecca becky becca",
    "victoria vicky tori",
    "abigail abby",
    "dorothy dot dottie",
    "stephanie steph",
    "pamela pam",
    "cynthia cindy",
    "judith judy",
    "theresa teresa tess terri",
    "isabella isabel bella",
    "frances francis fran frank frankie",
    "donald don donnie",
    "ronald ron ronnie",
    "douglas doug",
    "leonard leo len",
    "philip phil",
    "peter pete",
    "henry hank harry",
    "albert al",
    "eugene gene",
    "vincent vince vinny",
    "walter walt wally",
    "barbara barb babs",
    "jacqueline jackie",
    "melissa mel missy",
    "amanda mandy",
    "natalie nat",
    "danielle dani",
)
_CANONICAL: dict[str, str] = {}
for _group in _NAME_GROUPS:
    _names = _group.split()
    _root = next((_CANONICAL[n] for n in _names if n in _CANONICAL), _names[0])
    for _name in _names:
        _CANONICAL.setdefault(_name, _root)


def _canonical_first_name(name: str | None) -> str | None:
    if name is None:
        return None
    first = name.split(" ", 1)[0]
    return _CANONICAL.get(first, first)


_SOUNDEX_CODES = {
    c: str(d) for d, letters in enumerate(("", "bfpv", "cgjkqsxz", "dt", "l", "mn", "r")) for c in letters
}


def _soundex(name: str | None) -> str:
    """American Soundex of the letters of ``name`` ("" when it has none)."""
    letters = [c for c in (name or "") if "a" <= c <= "z"]
    if not letters:
        return ""
    code = [letters[0].upper()]
    previous = _SOUNDEX_CODES.get(letters[0], "")
    for c in letters[1:]:
        digit = _SOUNDEX_CODES.get(c, "")
        if digit and digit != previous:
            code.append(digit)
            if len(code) == 4:
                break
        if c not in "hw":
            previous = digit
    return "".join(code).ljust(4, "0")


# --- blocking keys ------------------------------------------------------------------------------------


def _keys(r: Mapping[str, str | None]) -> list[str]:
    """Blocking keys of a normalised record (see ``blocking_keys``)."""
    first, last = r["first_name"], r["last_name"]
    initials = sorted({n[0] for n in (first, last) if n})
    keys: list[str] = []
    if r["email"]:
        keys.append(f"em|{r['email']}")
    if r["phone"]:
        keys.append(f"ph|{r['phone']}")
    birthday, postal = r["birthday"], r["postal_code"]
    for initial in initials:
        if birthday:
            keys.append(f"dob|{birthday}|{initial}")
        if postal:
            keys.append(f"pc|{postal}|{initial}")
    if first and last:
        sounds = "|".join(sorted((_soundex(_canonical_first_name(first)), _soundex(last))))
        if birthday:
            keys.append(f"nm|{sounds}|{birthday[:4]}")
        if postal:
            keys.append(f"np|{sounds}|{postal[:3]}")
        if r["city"]:
            keys.append(f"nc|{sounds}|{_soundex(r['city'])}")
    number = (r["street"] or "").split(" ", 1)[0]
    if number.isdigit() and last:
        keys.append(f"st|{number}|{_soundex(last)}")
    return keys


def blocking_keys(record: Mapping[str, Any]) -> list[str]:
    """Short deterministic strings; two records that may be one person share at least one.

    The record is normalised first. Keys: the email; the phone; the birthday with either initial;
    the postal code with either initial; the Soundex codes of (nickname-resolved) first and last name,
    in either order, with the birth year and with the first three characters of the postal code.
    Using either initial and either name order keeps swapped names and a typo in one name together.
    Values are in the keys: store only a keyed hash (HMAC) of them.
    """
    return _keys(normalise_record(record))


# --- DuckDB and Splink plumbing --------------------------------------------------------------------------


def _connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that can neither spill to a temporary directory nor touch files."""
    con = duckdb.connect(":memory:", config={"temp_directory": ""})
    con.execute("SET enable_external_access = false")
    return con


# Splink messages that are expected here and say nothing useful to an operator.
_EXPECTED_SPLINK_MESSAGES = re.compile(
    r"not observed in dataset, unable to train|Probe returned zero blocked pairs|"
    r"parameter estimates which have neither been estimated"
)


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _EXPECTED_SPLINK_MESSAGES.search(record.getMessage())


_DROP_EXPECTED = _DropExpected()


@contextmanager
def _quiet_splink() -> Iterator[None]:
    """Splink's loggers at WARNING (none of its messages at that level carries record values), minus
    the expected notes above; Splink's expected warning about sampled estimates silenced."""
    logger = logging.getLogger("splink")
    if logger.level == logging.NOTSET or logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)
    loggers = [logger] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("splink.")
    ]
    for each in loggers:
        each.addFilter(_DROP_EXPECTED)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The sampled blocking analysis estimate", category=UserWarning)
            yield
    finally:
        for each in loggers:
            each.removeFilter(_DROP_EXPECTED)


def _db_api(con: duckdb.DuckDBPyConnection) -> Any:
    from splink import DuckDBAPI

    api = DuckDBAPI(con)
    # DatabaseAPI keeps a spare in-memory connection of its own; make it as tight as ours
    spare = getattr(api, "_ddb_con", None)
    if isinstance(spare, duckdb.DuckDBPyConnection) and spare is not con:
        spare.close()
        api._ddb_con = con
    return api


_BLOCKED_PAIRS_SQL = """
    WITH k AS (SELECT DISTINCT record_id, bkey FROM candor_keys_arrow),
    usable AS (SELECT bkey FROM k GROUP BY bkey HAVING count(*) BETWEEN 2 AND {max_block}),
    kk AS (SELECT k.record_id, k.bkey FROM k SEMI JOIN usable ON k.bkey = usable.bkey)
    SELECT DISTINCT '0' AS match_key, a.record_id AS join_key_l, b.record_id AS join_key_r
    FROM kk a JOIN kk b ON a.bkey = b.bkey AND a.record_id < b.record_id
"""


class _DuckDBBackend:
    """Matching on an in-memory DuckDB of its own (no spilling, no file access)."""

    name = "duckdb"

    def __init__(self) -> None:
        self.con = _connect()
        self._api: Any = None

    def api(self) -> Any:
        if self._api is None:
            self._api = _db_api(self.con)
        return self._api

    def settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(settings))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def blocked_pairs(self, keys: pa.Table) -> str:
        self.con.register("candor_keys_arrow", keys)
        self.con.execute("CREATE TABLE candor_blocked_pairs AS " + _BLOCKED_PAIRS_SQL.format(max_block=MAX_BLOCK_SIZE))
        self.con.unregister("candor_keys_arrow")
        return "candor_blocked_pairs"

    def close(self) -> None:
        self.con.close()


class _SparkBackend:
    """Matching through Splink's Spark backend, on the process's shared Spark session (candor.engines).

    The comparisons are the same definitions, written in Spark SQL (``for_dialect``); the saved model
    keeps DuckDB's text, so either engine reads a model the other trained.
    """

    name = "spark"

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._api: Any = None
        self._views: list[str] = []
        from candor.engines import quiet_sockets

        self._quiet = quiet_sockets()  # PySpark's unclosed local sockets: collected in ``close``
        self._quiet.__enter__()

    def api(self) -> Any:
        if self._api is None:
            self._api = self.engine.splink_api()
        return self._api

    def settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return for_dialect(settings, "spark")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        import sqlglot

        return self.engine.rows(sqlglot.transpile(sql, read="duckdb", write="spark")[0])

    def blocked_pairs(self, keys: pa.Table) -> str:
        name = f"candor_blocked_pairs_{id(self):x}"
        spark = self.engine.session()
        spark.createDataFrame(keys).createOrReplaceTempView("candor_keys_arrow")
        pairs = spark.sql(_BLOCKED_PAIRS_SQL.format(max_block=MAX_BLOCK_SIZE)).persist()
        pairs.count()
        pairs.createOrReplaceTempView(name)
        spark.catalog.dropTempView("candor_keys_arrow")
        self._views.append(name)
        return name

    def close(self) -> None:
        spark = self.engine.session()
        for name in self._views:
            spark.catalog.dropTempView(name)
        spark.catalog.clearCache()  # persisted Splink tables: the memory is released
        self._quiet.__exit__(None, None, None)


def _backend(engine: Any) -> _DuckDBBackend | _SparkBackend:
    if engine is None or getattr(engine, "name", "duckdb") == "duckdb":
        return _DuckDBBackend()
    return _SparkBackend(engine)


def for_dialect(settings: Mapping[str, Any], dialect: str) -> dict[str, Any]:
    """The model's settings with every comparison level's SQL in ``dialect`` (``duckdb`` or ``spark``).

    The levels are Candor's own definitions (``_comparisons``), so each is regenerated, position by
    position, from DuckDB's text: sqlglot transpiles it, and Jaro-Winkler takes the name of Splink's
    Spark UDF. A model whose levels do not line up with this release's is refused (retrain it).
    """
    import sqlglot

    out = copy.deepcopy(dict(settings))
    reference = _comparisons()
    comparisons = out.get("comparisons") or []
    if [c.get("output_column_name") for c in comparisons] != [c["output_column_name"] for c in reference]:
        raise MatchingError("the saved matching model does not match this release's comparisons: retrain it")
    for ours, ref in zip(comparisons, reference, strict=True):
        levels, ref_levels = ours["comparison_levels"], ref["comparison_levels"]
        if [lv.get("label_for_charts") for lv in levels] != [lv["label_for_charts"] for lv in ref_levels]:
            raise MatchingError("the saved matching model does not match this release's comparisons: retrain it")
        for level, ref_level in zip(levels, ref_levels, strict=True):
            sql = ref_level["sql_condition"]
            if dialect == "spark" and sql != "ELSE":
                sql = sqlglot.transpile(sql, read="duckdb", write="spark")[0]
                sql = re.sub(r"\bJAROWINKLER_SIMILARITY\(", "jaro_winkler(", sql)
            level["sql_condition"] = sql
    out["sql_dialect"] = dialect
    return out


_SCHEMA = pa.schema([("record_id", pa.string())] + [(f, pa.string()) for f in (*FIELDS, "first_canon")])
_KEYS_SCHEMA = pa.schema([("record_id", pa.string()), ("bkey", pa.string())])


def _feature_row(r: Mapping[str, str | None]) -> list[str | None]:
    return [r.get("record_id"), *(r[f] for f in FIELDS), _canonical_first_name(r["first_name"])]


def _prepare(records: Iterable[Mapping[str, Any]], with_keys: bool) -> tuple[pa.Table, pa.Table | None, int]:
    """Normalised records as an Arrow table (and their blocking keys), built in chunks."""
    batches: list[pa.RecordBatch] = []
    key_batches: list[pa.RecordBatch] = []
    seen: set[str] = set()
    columns: list[list[str | None]] = [[] for _ in _SCHEMA]
    key_ids: list[str] = []
    key_values: list[str] = []

    def flush() -> None:
        batches.append(pa.RecordBatch.from_arrays([pa.array(c, pa.string()) for c in columns], schema=_SCHEMA))
        for c in columns:
            c.clear()
        if with_keys:
            key_batches.append(
                pa.RecordBatch.from_arrays(
                    [pa.array(key_ids, pa.string()), pa.array(key_values, pa.string())], schema=_KEYS_SCHEMA
                )
            )
            key_ids.clear()
            key_values.clear()

    count = 0
    for position, raw in enumerate(records):
        if raw.get("record_id") is None:
            raise MatchingError(f"record at position {position} has no record_id; every record needs one")
        r = normalise_record(raw)
        record_id = r["record_id"]
        assert record_id is not None
        if record_id in seen:
            raise MatchingError(f"record_id at position {position} is not unique; record ids must be unique")
        seen.add(record_id)
        for column, value in zip(columns, _feature_row(r), strict=True):
            column.append(value)
        if with_keys:
            for key in _keys(r):
                key_ids.append(record_id)
                key_values.append(key)
        count += 1
        if len(columns[0]) >= _CHUNK:
            flush()
    flush()
    table = pa.Table.from_batches(batches, schema=_SCHEMA)
    keys = pa.Table.from_batches(key_batches, schema=_KEYS_SCHEMA) if with_keys else None
    return table, keys, count


# --- the comparisons ------------------------------------------------------------------------------------


def _null(column: str) -> dict[str, Any]:
    return {
        "sql_condition": f'"{column}_l" IS NULL OR "{column}_r" IS NULL',
        "label_for_charts": "null",
        "is_null_level": True,
    }


def _level(sql: str, label: str, tf: str | None = None) -> dict[str, Any]:
    level: dict[str, Any] = {"sql_condition": sql, "label_for_charts": label}
    if tf:
        level |= {"tf_adjustment_column": tf, "tf_adjustment_weight": 1.0, "tf_minimum_u_value": 0.001}
    return level


_ELSE = {"sql_condition": "ELSE", "label_for_charts": "else"}


def _jw(a: str, b: str) -> str:
    return f'jaro_winkler_similarity("{a}", "{b}")'


def _comparisons() -> list[dict[str, Any]]:
    def comparison(name: str, levels: list[dict[str, Any]]) -> dict[str, Any]:
        return {"output_column_name": name, "comparison_description": name, "comparison_levels": levels}

    birthday_swapped = (
        '"birthday_l" = substr("birthday_r", 1, 5) || substr("birthday_r", 9, 2) || \'-\' || substr("birthday_r", 6, 2)'
    )
    return [
        comparison(
            "first_name",
            [
                _null("first_name"),
                _level('"first_name_l" = "first_name_r"', "exact", tf="first_name"),
                _level('"first_canon_l" = "first_canon_r"', "nickname"),
                _level(f"{_jw('first_name_l', 'first_name_r')} >= 0.92", "jaro-winkler >= 0.92"),
                _level(f"{_jw('first_name_l', 'last_name_r')} >= 0.92", "swapped with last name"),
                _level(f"{_jw('first_name_l', 'first_name_r')} >= 0.8", "jaro-winkler >= 0.8"),
                _ELSE,
            ],
        ),
        comparison(
            "last_name",
            [
                _null("last_name"),
                _level('"last_name_l" = "last_name_r"', "exact", tf="last_name"),
                _level(f"{_jw('last_name_l', 'last_name_r')} >= 0.92", "jaro-winkler >= 0.92"),
                _level(f"{_jw('last_name_l', 'first_name_r')} >= 0.92", "swapped with first name"),
                _level(f"{_jw('last_name_l', 'last_name_r')} >= 0.8", "jaro-winkler >= 0.8"),
                _ELSE,
            ],
        ),
        comparison(
            "email",
            [
                _null("email"),
                _level('"email_l" = "email_r"', "exact"),
                _level('damerau_levenshtein("email_l", "email_r") <= 2', "damerau-levenshtein <= 2"),
                _level("split_part(\"email_l\", '@', 1) = split_part(\"email_r\", '@', 1)", "same local part"),
                _ELSE,
            ],
        ),
        comparison(
            "phone",
            [
                _null("phone"),
                _level('"phone_l" = "phone_r"', "exact"),
                _level('damerau_levenshtein("phone_l", "phone_r") <= 1', "one digit off"),
                _level('right("phone_l", 7) = right("phone_r", 7)', "last 7 digits"),
                _ELSE,
            ],
        ),
        comparison(
            "birthday",
            [
                _null("birthday"),
                _level('"birthday_l" = "birthday_r"', "exact"),
                _level(birthday_swapped, "day and month transposed"),
                _level('damerau_levenshtein("birthday_l", "birthday_r") <= 1', "one character off"),
                _level('substr("birthday_l", 1, 4) = substr("birthday_r", 1, 4)', "same year"),
                _ELSE,
            ],
        ),
        comparison(
            "address",
            [
                {
                    "sql_condition": " OR ".join(
                        "(" + " AND ".join(f'"{c}_{side}" IS NULL' for c in ("street", "postal_code", "city")) + ")"
                        for side in "lr"
                    ),
                    "label_for_charts": "null",
                    "is_null_level": True,
                },
                _level('"street_l" = "street_r" AND "postal_code_l" = "postal_code_r"', "same street and postal code"),
                _level('"street_l" = "street_r"', "same street"),
                _level('damerau_levenshtein("street_l", "street_r") <= 2', "street damerau-levenshtein <= 2"),
                _level(f"{_jw('street_l', 'street_r')} >= 0.9", "street jaro-winkler >= 0.9"),
                _level('"postal_code_l" = "postal_code_r"', "same postal code"),
                _level('"city_l" = "city_r"', "same city", tf="city"),
                _level(
                    'substr("postal_code_l", 1, 3) = substr("postal_code_r", 1, 3) '
                    f"OR {_jw('city_l', 'city_r')} >= 0.9",
                    "same postal area or similar city",
                ),
                _ELSE,
            ],
        ),
    ]


def _base_settings() -> dict[str, Any]:
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "record_id",
        "comparisons": _comparisons(),
        "blocking_rules_to_generate_predictions": [],
        "retain_matching_columns": False,
        "retain_intermediate_calculation_columns": False,
        "em_convergence": 0.0001,
        "max_iterations": 40,
        "probability_two_random_records_match": 0.0001,
    }


def _without_tf(settings: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(settings)
    for comparison in out["comparisons"]:
        for level in comparison["comparison_levels"]:
            for key in ("tf_adjustment_column", "tf_adjustment_weight", "tf_minimum_u_value"):
                level.pop(key, None)
    return out


# Keys a saved model may hold, at each level of the settings dict: parameters and definitions only.
_SETTINGS_KEYS = frozenset(
    {
        "link_type",
        "probability_two_random_records_match",
        "em_convergence",
        "max_iterations",
        "unique_id_column_name",
        "retain_matching_columns",
        "retain_intermediate_calculation_columns",
        "additional_columns_to_retain",
        "sql_dialect",
        "linker_uid",
        "source_dataset_column_name",
        "comparisons",
        "blocking_rules_to_generate_predictions",
        "match_weight_column_prefix",
        "term_frequency_adjustment_column_prefix",
        "comparison_vector_value_column_prefix",
    }
)
_COMPARISON_KEYS = frozenset({"output_column_name", "comparison_description", "comparison_levels"})
_LEVEL_KEYS = frozenset(
    {
        "sql_condition",
        "label_for_charts",
        "is_null_level",
        "m_probability",
        "u_probability",
        "tf_adjustment_column",
        "tf_adjustment_weight",
        "tf_minimum_u_value",
        "fix_m_probability",
        "fix_u_probability",
        "disable_tf_exact_match_detection",
    }
)


def _parameters_only(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings with anything that is not a parameter or a definition removed."""
    out = {k: v for k, v in settings.items() if k in _SETTINGS_KEYS}
    out["blocking_rules_to_generate_predictions"] = []
    out["comparisons"] = [
        {k: v for k, v in comparison.items() if k in _COMPARISON_KEYS}
        | {
            "comparison_levels": [
                {k: v for k, v in level.items() if k in _LEVEL_KEYS} for level in comparison["comparison_levels"]
            ]
        }
        for comparison in settings["comparisons"]
    ]
    return out


def _lambda_from_birthday_block(
    backend: _DuckDBBackend | _SparkBackend, table: str, settings: Mapping[str, Any], matches_among_blocked: float
) -> float:
    """λ from the share of matches among pairs sharing a birthday.

    matches = share × pairs sharing a birthday ÷ P(a matching pair shares a birthday), where that
    probability is P(both have one) × m(exact birthday). Splink's own estimate divides by the Bayes
    factor m/u instead, and u from random sampling is inflated by true matches on small data sets.
    """
    found = backend.rows(
        f"""
        WITH g AS (SELECT count(*) AS c FROM {table} WHERE birthday IS NOT NULL GROUP BY birthday)
        SELECT (SELECT count(*) FROM {table}), (SELECT coalesce(sum(c), 0) FROM g),
               (SELECT coalesce(sum(c * (c - 1) / 2), 0) FROM g)
        """
    )
    total, with_birthday, blocked = (int(v or 0) for v in found[0]) if found else (0, 0, 0)
    m_exact = next(
        (
            float(level.get("m_probability") or 0.0)
            for comparison in settings["comparisons"]
            if comparison["output_column_name"] == "birthday"
            for level in comparison["comparison_levels"]
            if level.get("label_for_charts") == "exact"
        ),
        0.0,
    )
    all_pairs = total * (total - 1) / 2
    share_with_birthday = with_birthday / total if total else 0.0
    reach = m_exact * share_with_birthday**2
    if not all_pairs or not blocked or reach <= 0:
        return float(settings["probability_two_random_records_match"])
    return min(max(matches_among_blocked * blocked / reach / all_pairs, 1e-12), 0.5)


# --- the model -----------------------------------------------------------------------------------------


class Model:
    """A trained Fellegi–Sunter model (Splink settings with m, u and λ)."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._settings = _parameters_only(settings)
        self._lock = threading.Lock()
        self._score_con: duckdb.DuckDBPyConnection | None = None
        self._score_sql: str | None = None
        self._scorer: fastscore.Scorer | None = None  # the SQL's Python twin, when it has one

    @property
    def probability_two_random_records_match(self) -> float:
        return float(self._settings["probability_two_random_records_match"])

    # training

    @classmethod
    def train(
        cls,
        records: Sequence[Mapping[str, Any]],
        *,
        max_pairs: float = 1e6,
        seed: int = 1,
        engine: Any = None,
        max_iterations: int | None = None,
    ) -> Model:
        """Estimate the model from unlabelled records.

        u: random sampling of up to ``max_pairs`` pairs (nearly all non-matches). m: expectation
        maximisation over pairs blocked on email, then on birthday (each estimates the comparisons
        its blocking rule does not fix), at most ``max_iterations`` rounds each (default: until it
        converges, up to 40; every round is one pass over the pairs, one job on Spark). λ: from the
        share of matches EM finds among pairs sharing a birthday, scaled by how many such pairs there
        are and how often matches share one. Term frequencies of first name, last name and city adjust
        exact matches at prediction time.
        """
        if len(records) < MIN_TRAINING_RECORDS:
            raise MatchingError(
                f"too few records to train a matching model: {len(records)} given, at least "
                f"{MIN_TRAINING_RECORDS} needed (more, ideally thousands, give better estimates)"
            )
        from splink import Linker, block_on

        backend = _backend(engine)
        try:
            table, _, _ = _prepare(records, with_keys=False)
            with _quiet_splink():
                api = backend.api()
                input_table = api.register(table)
                base = _base_settings()
                if max_iterations is not None:
                    base["max_iterations"] = max(1, int(max_iterations))
                linker = Linker(input_table, backend.settings(base), log_level=None)
                # (Splink logs a hint when max_pairs is exactly its default; pass an equal float.)
                linker.training.estimate_u_using_random_sampling(
                    max_pairs=float(max_pairs) + 1e-9, seed=seed, min_count_per_level=None
                )
                em_pairs = max(float(max_pairs), 1e5)
                # Pairs sharing an email are nearly all matches: EM there pins down m for the other
                # comparisons (birthday above all). EM over pairs sharing a birthday then estimates m
                # for names, email, phone and address, and the share of matches among those pairs.
                linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on("email"), estimate_without_term_frequencies=True, max_pairs=em_pairs
                )
                session = linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on("birthday"), estimate_without_term_frequencies=True, max_pairs=em_pairs
                )
                matches_among_blocked = float(session.core_model_settings.probability_two_random_records_match)
                settings = linker.misc.save_model_to_json()
            settings["probability_two_random_records_match"] = _lambda_from_birthday_block(
                backend, input_table.physical_name, settings, matches_among_blocked
            )
            settings = for_dialect(settings, "duckdb")  # the saved model keeps one text, whichever engine trained
        except MatchingError:
            raise
        except Exception as exc:  # noqa: BLE001 (Splink and the engines raise many types; none may carry values out)
            raise MatchingError(f"training failed in Splink/{backend.name}: {type(exc).__name__}") from None
        finally:
            backend.close()
        return cls(settings)

    # persistence

    def to_json(self) -> str:
        """The model as JSON: λ, m and u per comparison level and the comparison definitions only."""
        return json.dumps({"format": _FORMAT, "settings": self._settings}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Model:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MatchingError(f"model JSON does not parse (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("settings"), dict):
            raise MatchingError(f"not a saved matching model: expected an object with format {_FORMAT!r}")
        try:
            return cls(data["settings"])
        except (KeyError, TypeError) as exc:
            raise MatchingError(f"saved matching model is incomplete: {type(exc).__name__} {exc}") from None

    # batch prediction

    def predict(
        self, records: Sequence[Mapping[str, Any]], *, threshold: float, engine: Any = None
    ) -> list[tuple[str, str, float]]:
        """Every pair (record_id_a, record_id_b, match_probability) with probability >= ``threshold``.

        Pairs are those sharing a blocking key (``blocking_keys``; keys held by more than
        ``MAX_BLOCK_SIZE`` records are skipped). ``record_id_a < record_id_b``; sorted.
        """
        if not 0.0 <= threshold <= 1.0:
            raise MatchingError(f"threshold must be a probability between 0 and 1, got {threshold!r}")
        if len(records) < 2:
            return []
        from splink import Linker

        backend = _backend(engine)
        try:
            table, keys, _ = _prepare(records, with_keys=True)
            assert keys is not None
            pairs_table = backend.blocked_pairs(keys)
            del keys
            with _quiet_splink():
                api = backend.api()
                linker = Linker(api.register(table), backend.settings(self._settings), log_level=None)
                linker.table_management.register_blocked_pairs_for_predict(api.register(pairs_table))
                predictions = linker.inference.predict(threshold_match_probability=threshold, warning_mode="never")
                rows = backend.rows(
                    f"SELECT record_id_l, record_id_r, match_probability FROM {predictions.physical_name} "
                    "ORDER BY record_id_l, record_id_r"
                )
        except MatchingError:
            raise
        except Exception as exc:  # noqa: BLE001 (Splink and the engines raise many types; none may carry values out)
            raise MatchingError(f"prediction failed in Splink/{backend.name}: {type(exc).__name__}") from None
        finally:
            backend.close()
        return [(a, b, float(p)) for a, b, p in rows if p >= threshold]

    # incremental scoring

    def _score_setup(self) -> tuple[duckdb.DuckDBPyConnection, str]:
        """One connection and one SQL statement for ``score``, built on first use."""
        if self._score_con is not None and self._score_sql is not None:
            return self._score_con, self._score_sql
        from splink.internals.realtime import compare_records

        con = _connect()
        dummy = dict.fromkeys(_SCHEMA.names, "x")
        settings = _without_tf(self._settings)
        with _quiet_splink():
            api = _db_api(con)
            out = compare_records(
                pa.Table.from_pylist([dummy], schema=_SCHEMA),
                pa.Table.from_pylist([dummy], schema=_SCHEMA),
                settings,
                api,
            )
        sql = out.sql_used_to_create
        con.close()
        self._scorer = fastscore.build(settings, sql)
        found = re.findall(r"__splink__compare_records_(left|right)_([A-Za-z0-9]+)", sql)
        for side, uid in set(found):
            sql = sql.replace(f"__splink__compare_records_{side}_{uid}", f"candor_score_{side}")
        con = _connect()
        self._score_sql = f"SELECT record_id_r, match_probability FROM ({sql}) ORDER BY match_probability DESC"
        self._score_con = con
        return con, self._score_sql

    def score(self, record: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> list[tuple[str, float]]:
        """Match probability of ``record`` against each candidate: (candidate record_id, probability),
        most probable first.

        For incremental linking, with candidates found through ``blocking_keys``. The comparison levels
        are evaluated in Python (``fastscore``, with the weights read from Splink's SQL for this model);
        a model with a level that has no Python twin runs that SQL on one in-memory DuckDB connection,
        reused across calls (thread-safe, serialised).
        Term-frequency adjustments are omitted here: they need the frequencies of values, which a
        saved model does not hold; exact matches on first name, last name and city score at their
        average weight.
        """
        if not candidates:
            return []
        left = dict(zip(_SCHEMA.names, _feature_row({"record_id": "", **normalise_record(record)}), strict=True))
        rights = []
        for position, candidate in enumerate(candidates):
            if candidate.get("record_id") is None:
                raise MatchingError(f"candidate at position {position} has no record_id; every candidate needs one")
            rights.append(dict(zip(_SCHEMA.names, _feature_row(normalise_record(candidate)), strict=True)))
        with self._lock:
            self._score_setup()
            scorer = self._scorer
        if scorer is not None:  # the comparisons evaluated in Python: no SQL planning per call
            return scorer.score(left, rights)
        return self._score_sql_rows(left, rights)

    def _score_sql_rows(self, left: Mapping[str, Any], rights: Sequence[Mapping[str, Any]]) -> list[tuple[str, float]]:
        """``score`` through Splink's SQL on DuckDB (what the Python twin must equal)."""
        left_table = pa.Table.from_pylist([dict(left)], schema=_SCHEMA)
        right_table = pa.Table.from_pylist([dict(r) for r in rights], schema=_SCHEMA)
        with self._lock:
            con, sql = self._score_setup()
            con.register("candor_score_left", left_table)
            con.register("candor_score_right", right_table)
            try:
                rows = con.execute(sql).fetchall()
            finally:
                con.unregister("candor_score_left")
                con.unregister("candor_score_right")
        return [(str(rid), float(p)) for rid, p in rows]

    def close(self) -> None:
        """Release the scoring connection (it is opened again on the next ``score``)."""
        with self._lock:
            if self._score_con is not None:
                self._score_con.close()
            self._score_con = None
            self._score_sql = None
            self._scorer = None
