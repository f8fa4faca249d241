"""Survey: KoboToolbox field-visit submissions (``connector``) and their parser (``kobo``)."""
