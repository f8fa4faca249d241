"""``python -m bench``: run every benchmark and write its JSON under ``bench/results/``."""

import sys

from bench import (
    collusion,
    core_pipeline,
    delta_sharing,
    evaluation_adjustments,
    format_parsing,
    grant_to_delivered,
    incremental_pull,
    lender_feed,
    offers_market,
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
)
