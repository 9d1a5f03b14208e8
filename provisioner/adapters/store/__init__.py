"""SQLAlchemy store: tables, migrations and the queries behind the Store port."""
