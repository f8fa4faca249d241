"""Utility: Green Button Connect My Data ESPI feeds (``connector``) and their parser (``espi``)."""
