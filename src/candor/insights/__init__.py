"""Customer-experience insights that protect small groups (issue 9).

``views.py`` is the contract (named views, a portable SQL subset), ``reports.py`` the insights,
``privacy.py`` the minimum cell size and complementary suppression, ``dp.py`` differential privacy
with the budget ledger, ``comments.py`` survey comments (sealed, scanned before display),
``render.py`` charts and the standalone HTML report. docs/insights.md describes them.
"""
