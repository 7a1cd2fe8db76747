"""The hunting console: a web application over a collector's store (``ttpsensor console``)."""
