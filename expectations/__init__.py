"""Validation of the canonical tables with Great Expectations 1.x.

* ``expectations/suites/<table>.json``: one GX expectation suite per canonical table (the rules);
  :mod:`expectations.suites` loads them once per process and names every expectation.
* :mod:`expectations.prepare`: the one vectorised step from a canonical frame to the frame GX
  validates (types, documented derived columns, row index for attribution).
* :mod:`expectations.plan`: the suites compiled into vectorised checks that find exactly the rows
  GX fails (without importing GX); the runner lets the plan decide and runs GX only over the
  failing rows and a sample of passing ones, so results and Data Docs still show every expectation.
* :mod:`expectations.runner`: :func:`~expectations.runner.validate_shard` (one validation per table
  per shard, failing rows attributed to SMEs), :func:`~expectations.runner.record_validation`
  (warehouse rows, quarantine, GX result JSON) and :func:`~expectations.runner.build_data_docs`.

Importing this package does not import Great Expectations; the runner does on first use.
"""
