"""``python -m bench``: run every benchmark, write its JSON under ``bench/results/``, then ``bench/RESULTS.md``."""

import sys

from bench import (
    airflow_overhead,
    collusion,
    core_pipeline,
    delta_sharing,
    evaluation_adjustments,
    format_parsing,
    grant_to_delivered,
    incremental_pull,
    lender_feed,
    offers_market,
    report,
    statement_model,
    webhooks,
)

sys.exit(
    statement_model.main([])
    or core_pipeline.main([])
    or format_parsing.main([])
    or lender_feed.main([])
    or webhooks.main([])
    or grant_to_delivered.main([])
    or delta_sharing.main([])
    or collusion.main([])
    or evaluation_adjustments.main([])
    or offers_market.main([])
    or incremental_pull.main([])
    or airflow_overhead.main([])
    # Last: bench/RESULTS.md from every results file just written.
    or report.main([])
)
