"""The web service: connector links and the SME's own pages, the lender API, the operator API.

:func:`dossier.web.app.create_app` builds one FastAPI application from settings, with one router
per audience (``sme``, ``lender``, ``operator``), Pydantic models for every body, authentication as
dependencies (:mod:`dossier.web.deps`) and errors as RFC 9457 problem details
(:mod:`dossier.web.problems`). ``dossier serve`` runs it.
"""
