"""Optional differential privacy for insights (OpenDP), with a persistent privacy-budget ledger.

A request may ask for ``{"dp": {"epsilon": 0.2}}``. Then:

- every released number of the report is a noisy one: counts of profiles, sums (revenue, credited
  conversions) and means (a noisy sum over a noisy count) get Laplace noise from OpenDP
  (``make_laplace`` on a vector, integer or float), scaled to the table's L1 sensitivity — how much
  the whole vector can move when one profile comes or goes — over its share of epsilon;
- what one profile can contribute is capped first, in the SQL: conversions per profile
  (``max_conversions``), revenue per conversion (``revenue_cap``), one survey answer per profile and
  cell. The sensitivities follow from those caps and from how many cells one profile can reach;
- the minimum-cell rule then applies to the *noisy* counts (post-processing: it costs no budget);
- the epsilon is charged to the **ledger** before anything is computed, in the store
  (``privacy_budget`` and ``privacy_budget_entries``), for dataset ``events`` and every calendar month
  (UTC) the request's period touches. A month whose spent budget plus this request would exceed
  ``CANDOR_DP_EPSILON_PER_MONTH`` refuses the request, releasing nothing. The ledger survives restarts
  and is shared by every process (the check and the charge are one conditional UPDATE).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from candor.store import Store, now_ms
from candor.store.schema import privacy_budget, privacy_budget_entries

DATASET = "events"
MAX_WINDOWS = 120  # a request may touch at most ten years of months


class BudgetError(Exception):
    """A DP request the ledger refuses (status 409) or that asks for more than allowed (400)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def windows(since_ms: int, until_ms: int) -> list[str]:
    """The calendar months (UTC, ``YYYY-MM``) the period [since, until) touches."""
    start = datetime.fromtimestamp(since_ms / 1000, tz=UTC)
    end = datetime.fromtimestamp(max(since_ms, until_ms - 1) / 1000, tz=UTC)
    out = []
    y, m = start.year, start.month
    while (y, m) <= (end.year, end.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        if len(out) > MAX_WINDOWS:
            raise BudgetError(f"a differentially private request may cover at most {MAX_WINDOWS} months", 400)
    return out


class Ledger:
    def __init__(self, store: Store, per_month: float, per_request: float) -> None:
        self.store = store
        self.per_month = per_month
        self.per_request = per_request

    def spent(self, months: Sequence[str] | None = None) -> dict[str, float]:
        with self.store.engine.connect() as conn:
            q = select(privacy_budget.c.window, privacy_budget.c.spent).where(privacy_budget.c.dataset == DATASET)
            if months is not None:
                q = q.where(privacy_budget.c.window.in_(list(months)))
            return {w: float(s) for w, s in conn.execute(q)}

    def status(self) -> dict[str, Any]:
        return {
            "dataset": DATASET,
            "epsilon_per_month": self.per_month,
            "epsilon_per_request": self.per_request,
            "months": {
                w: {"spent": round(s, 6), "left": round(max(0.0, self.per_month - s), 6)}
                for w, s in sorted(self.spent().items())
            },
        }

    def check_request(self, epsilon: Any) -> float:
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon > 0:
            raise BudgetError("dp.epsilon must be a number greater than 0", 400)
        eps = float(epsilon)
        limit = min(self.per_request, self.per_month)
        if eps > limit:
            raise BudgetError(
                f"dp.epsilon {eps:g} is over the limit of {limit:g} per request (CANDOR_DP_EPSILON_PER_REQUEST, "
                f"CANDOR_DP_EPSILON_PER_MONTH); ask for a smaller epsilon",
                400,
            )
        return eps

    def charge(self, epsilon: float, months: Sequence[str], *, insight: str, actor: str) -> None:
        """Spend ``epsilon`` in every month, all or nothing; refuse when a month would go over."""
        now = now_ms()
        with self.store.write() as conn:
            for w in months:
                conn.execute(
                    self.store.insert_ignore(privacy_budget),
                    {"dataset": DATASET, "window": w, "spent": 0.0, "updated_ms": now},
                )
            for w in months:
                res = conn.execute(
                    update(privacy_budget)
                    .where(
                        privacy_budget.c.dataset == DATASET,
                        privacy_budget.c.window == w,
                        privacy_budget.c.spent + epsilon <= self.per_month + 1e-9,
                    )
                    .values(spent=privacy_budget.c.spent + epsilon, updated_ms=now)
                )
                if res.rowcount != 1:
                    spent = conn.execute(
                        select(privacy_budget.c.spent).where(
                            privacy_budget.c.dataset == DATASET, privacy_budget.c.window == w
                        )
                    ).scalar()
                    raise BudgetError(  # the transaction rolls back: no month is charged
                        f"the privacy budget of dataset '{DATASET}' for {w} is exhausted: {float(spent or 0):g} of "
                        f"{self.per_month:g} epsilon spent, this request needs {epsilon:g}. Nothing was released; "
                        "ask without dp for k-suppressed numbers, for another period, or wait for the next month"
                    )
            conn.execute(
                privacy_budget_entries.insert(),
                [
                    {
                        "dataset": DATASET,
                        "window": w,
                        "epsilon": epsilon,
                        "insight": insight[:40],
                        "actor": actor[:100],
                        "ts_ms": now,
                    }
                    for w in months
                ],
            )


def laplace(values: Sequence[float], sensitivity: float, epsilon: float, *, integer: bool) -> tuple[list[float], float]:
    """OpenDP's Laplace mechanism on a vector of L1 ``sensitivity``: the noisy vector and the epsilon it spent."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    if not values:
        return [], 0.0
    scale = sensitivity / epsilon
    if integer:
        space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
        meas = space >> dp.m.then_laplace(scale=scale)
        used = float(meas.map(max(1, round(sensitivity))))
        return [float(v) for v in meas([round(v) for v in values])], used
    space_f = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
    meas_f = space_f >> dp.m.then_laplace(scale=scale)
    used = float(meas_f.map(float(sensitivity)))
    return [float(v) for v in meas_f([float(v) for v in values])], used
