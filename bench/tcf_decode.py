"""TC string decoding: candor.consent.tcf against the PyPI package iab-tcf, in the same run.

Run from the repository root::

    python bench/tcf_decode.py                  # 1,000 strings, best of 5 rounds
    python bench/tcf_decode.py --strings 200 --rounds 3

It generates ``--strings`` realistic TC strings with Candor's own encoder (a fixed ``--seed``):
"accept all" people with dense vendor sets (bitfield encoding), people who picked a few vendors
or whole blocks of them (range encoding), refusals, publisher restrictions, disclosed-vendors and
publisher TC segments, vendor ids up to about 1,200 like today's Global Vendor List. Strings that
iab-tcf cannot parse are skipped for both decoders and counted. Before timing, both decoders must
agree on every string's vendor consents and legitimate interests.

It prints decodes per second for each decoder (best round) and the ratio. Candor's decoder also
validates every rule of TCF v2.2 that iab-tcf does not check.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    from candor.consent import tcf
except ImportError:  # run from a checkout without installing: use src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from candor.consent import tcf

MAX_GVL_ID = 1200
LI_PURPOSES = (2, 7, 8, 9, 10, 11)


def _dense(rng: random.Random, top: int, share: float) -> frozenset[int]:
    return frozenset(i for i in range(1, top + 1) if rng.random() < share)


def _blocks(rng: random.Random, top: int) -> frozenset[int]:
    ids: set[int] = set()
    for _ in range(rng.randint(1, 6)):
        start = rng.randint(1, top)
        ids.update(range(start, min(top, start + rng.randint(5, 150)) + 1))
    return frozenset(ids)


def _vendor_sets(rng: random.Random) -> tuple[frozenset[int], frozenset[int]]:
    top = rng.randint(700, MAX_GVL_ID)
    profile = rng.random()
    if profile < 0.45:  # accept all: most vendors, bitfield
        return _dense(rng, top, rng.uniform(0.6, 0.95)), _dense(rng, top, rng.uniform(0.2, 0.5))
    if profile < 0.75:  # picked blocks of vendors: range
        return _blocks(rng, top), _blocks(rng, top)
    if profile < 0.90:  # a handful of vendors: range
        pick = frozenset(rng.sample(range(1, top + 1), rng.randint(1, 40)))
        return pick, frozenset(rng.sample(sorted(pick), len(pick) // 2))
    return frozenset(), frozenset()  # refused everything


def _restrictions(rng: random.Random) -> tuple[tcf.PublisherRestriction, ...]:
    out: list[tcf.PublisherRestriction] = []
    for purpose in rng.sample(range(1, 12), rng.choice((0, 0, 0, 1, 2, 3))):
        vendors = rng.sample(range(1, MAX_GVL_ID + 1), rng.randint(1, 60))
        kinds: dict[int, set[int]] = {}
        for vendor in vendors:
            kinds.setdefault(rng.randint(0, 2), set()).add(vendor)
        out.extend(tcf.PublisherRestriction(purpose, kind, frozenset(v)) for kind, v in kinds.items())
    return tuple(out)


def generate(count: int, seed: int) -> list[str]:
    """``count`` valid TCF v2.2 strings from Candor's encoder."""
    rng = random.Random(seed)
    day0 = datetime(2024, 1, 1, tzinfo=UTC)
    strings = []
    for _ in range(count):
        consents, li = _vendor_sets(rng)
        stamp = day0 + timedelta(days=rng.randint(0, 700))
        purposes = frozenset(p for p in range(1, 12) if rng.random() < 0.7)
        disclosed = None
        if rng.random() < 0.5:
            disclosed = consents | li | _dense(rng, max(consents | li, default=300), 0.5)
        publisher_tc = None
        if rng.random() < 0.2:
            n = rng.randint(0, 8)
            publisher_tc = tcf.PublisherTC(
                frozenset(p for p in range(1, 12) if rng.random() < 0.5),
                frozenset(p for p in LI_PURPOSES if rng.random() < 0.3),
                n,
                frozenset(i for i in range(1, n + 1) if rng.random() < 0.5),
                frozenset(i for i in range(1, n + 1) if rng.random() < 0.3),
            )
        tc = tcf.TCString(
            created=stamp,
            last_updated=stamp,
            cmp_id=rng.randint(2, 500),
            cmp_version=rng.randint(1, 60),
            consent_screen=rng.randint(0, 5),
            consent_language=rng.choice(("EN", "DE", "FR", "IT", "ES", "NL", "PL")),
            vendor_list_version=rng.randint(30, 140),
            tcf_policy_version=rng.choice((4, 5)),
            special_feature_optins=frozenset(f for f in (1, 2) if rng.random() < 0.5),
            purpose_consents=purposes,
            purpose_legitimate_interests=frozenset(p for p in LI_PURPOSES if rng.random() < 0.6),
            publisher_cc=rng.choice(("DE", "FR", "GB", "IT", "AA")),
            vendor_consents=consents,
            vendor_legitimate_interests=li,
            publisher_restrictions=_restrictions(rng),
            disclosed_vendors=disclosed,
            publisher_tc=publisher_tc,
        )
        strings.append(tcf.encode(tc))
    return strings


def _iab_vendor_ids(consent: Any, which: str) -> frozenset[int]:
    if which == "consent":
        ranged, ranges, field = consent.is_consent_range_encoding, "consented_vendors_range", "consented_vendors"
    else:
        ranged, ranges, field = consent.is_interests_range_encoding, "interests_vendors_range", "interests_vendors"
    if ranged:
        return frozenset(i for start, end in getattr(consent, ranges) for i in range(start, end + 1))
    return frozenset(i for i, flag in getattr(consent, field).items() if flag)


def _best_rate(decode: Callable[[str], object], strings: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for s in strings:
            decode(s)
        best = min(best, time.perf_counter() - start)
    return len(strings) / best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strings", type=int, default=1000, help="how many TC strings (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per decoder; the best counts")
    parser.add_argument("--seed", type=int, default=20240501)
    args = parser.parse_args(argv)

    warnings.simplefilter("ignore", DeprecationWarning)  # iab-tcf uses datetime.utcfromtimestamp
    try:
        import iab_tcf
    except ImportError:
        sys.exit("iab-tcf is not installed: pip install 'iab-tcf>=0.2.2' (it is in the dev extras)")

    strings = generate(args.strings, args.seed)
    usable, skipped = [], 0
    for s in strings:
        try:
            theirs = iab_tcf.decode_v2(s)
        except Exception:
            skipped += 1
            continue
        ours = tcf.decode(s)
        if ours.vendor_consents != _iab_vendor_ids(theirs, "consent") or ours.vendor_legitimate_interests != (
            _iab_vendor_ids(theirs, "interest")
        ):
            sys.exit(f"the decoders disagree on a string: {s[:60]}...")
        usable.append(s)
    if not usable:
        sys.exit("iab-tcf could parse none of the generated strings")

    candor_rate = _best_rate(tcf.decode, usable, args.rounds)
    iab_rate = _best_rate(iab_tcf.decode_v2, usable, args.rounds)
    ratio = candor_rate / iab_rate
    mean_chars = sum(map(len, usable)) / len(usable)

    print(f"TC string decoding: {len(usable)} strings (mean {mean_chars:.0f} chars), best of {args.rounds} rounds")
    print(f"skipped (iab-tcf could not parse): {skipped}")
    print()
    print(f"{'decoder':<28}{'decodes/s':>14}{'µs/decode':>12}")
    print(f"{'candor.consent.tcf.decode':<28}{candor_rate:>14,.0f}{1e6 / candor_rate:>12.1f}")
    print(f"{'iab_tcf.decode_v2':<28}{iab_rate:>14,.0f}{1e6 / iab_rate:>12.1f}")
    print(f"{'ratio candor / iab-tcf':<28}{ratio:>14.1f}x")
    return {
        "strings": len(usable),
        "skipped": skipped,
        "candor_per_s": candor_rate,
        "iab_tcf_per_s": iab_rate,
        "ratio": ratio,
    }


if __name__ == "__main__":
    main()
