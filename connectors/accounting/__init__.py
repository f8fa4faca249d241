"""Accounting: a cloud bookkeeping platform's monthly reports (``connector``) and their parser (``monthly_reports``)."""
