"""Public datasets and catalogs the library reads: STAC APIs (``stac``) and the RSVQA-HR
release layout with its tiles' georeference (``rsvqa``)."""
