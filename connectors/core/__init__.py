"""What every connector is built from.

``errors`` (what went wrong and what to do about it), ``http`` (timeouts, retries, verdicts),
``auth`` (OAuth2 refresh tokens, KoboToolbox tokens), ``streams`` (endpoints and paging),
``landing`` (raw bodies stored first, content-addressed), ``parsing`` (batched, typed coercion
into canonical frames) and ``connector`` (the shape of a source connector).
"""
