"""The catalogue of source faults and the outcome each one must have.

One row per way Alpha Vantage (or the network in front of it) can answer badly. The outcome
decides which guarantee a test checks:

* ``retried``: the run retries with backoff and then loads the good answer;
* ``fallback``: ``outputsize=full`` is refused; the run asks ``compact`` and loads that;
* ``fails``: the symbol fails with a message naming it and the cause; nothing of it changes;
* ``stops``: no later symbol can succeed (bad key, spent quota): the run stops there;
* ``rows_rejected``: the answer is good but some rows are not; those go to the rejects with
  their rule, the good rows load, and no stored bar is overwritten or deleted;
* ``rows_kept``: an exact copy of a bar: the bar loads once, the copy is kept in the rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["retried", "fallback", "fails", "stops", "rows_rejected", "rows_kept"]


@dataclass(frozen=True)
class Fault:
    behaviour: str  # the stub's behaviour (tests/stubs/alpha_vantage.py)
    symbol: str  # the symbol that suffers it in the fault matrix
    outcome: Outcome
    evidence: str  # a failure message must contain it, or the rejects' reason must be it


FAULTS: tuple[Fault, ...] = (
    Fault("http_429", "HTTP429", "retried", ""),
    Fault("http_500", "HTTP500", "retried", ""),
    Fault("http_503", "HTTP503", "retried", ""),
    Fault("reset", "RESET", "retried", ""),
    Fault("timeout", "TIMEOUT", "retried", ""),
    Fault("cut_body", "CUTBODY", "retried", ""),
    Fault("note_frequency", "NOTE", "retried", ""),
    Fault("info_burst", "BURST", "retried", ""),
    Fault("info_premium", "PREMIUM", "fallback", ""),
    Fault("error_message", "ERRMSG", "fails", "refused the call"),
    Fault("truncated", "TRUNC", "fails", "truncated or invalid JSON"),
    Fault("html", "HTML", "fails", "an HTML page"),
    Fault("empty_object", "EMPTYOBJ", "fails", "an empty object {}"),
    Fault("empty_series", "EMPTYSER", "fails", "an empty time series"),
    Fault("wrong_symbol", "WRONGSYM", "fails", "a series for 'ZZZZ'"),
    Fault("invalid_key", "BADKEY", "stops", "rejected the API key"),
    Fault("info_demo", "DEMO", "stops", "demo key"),
    Fault("info_daily", "DAILY", "stops", "daily quota used up"),
    Fault("duplicates", "DUPS", "rows_rejected", "duplicate_date"),
    Fault("non_numeric", "NONNUM", "rows_rejected", "missing_value"),
    Fault("empty_values", "EMPTYVAL", "rows_rejected", "missing_value"),
    Fault("missing_field", "NOFIELD", "rows_rejected", "missing_value"),
    Fault("bad_date", "BADDATE", "rows_rejected", "bad_date"),
    Fault("future", "FUTURE", "rows_rejected", "future_date"),
    Fault("exact_duplicates", "EXACTDUP", "rows_kept", "duplicate_date"),
)
STOPPING = tuple(f for f in FAULTS if f.outcome == "stops")
NOT_STOPPING = tuple(f for f in FAULTS if f.outcome != "stops")
