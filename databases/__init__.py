"""Data only: the demo database's SQL (shop.sql), installed as package data of `macsql.databases`.

No code lives here. The file exists because a mapped folder needs one: setuptools' editable installs map a
subpackage only when it has an `__init__.py`, and importlib.resources finds the SQL through that package in
a checkout, an editable install and a wheel alike.
"""
