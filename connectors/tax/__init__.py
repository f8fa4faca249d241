"""Tax: HMRC Making Tax Digital VAT obligations and returns (``connector``) and their parser (``hmrc_vat``)."""
