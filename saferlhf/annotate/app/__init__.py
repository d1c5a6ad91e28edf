"""The human annotation app (issue 23): a FastAPI server over a SQLAlchemy database (SQLite by default, PostgreSQL by
URL) that hands response pairs to annotators and collects their labels (docs/annotate.md).

* ``db``: the tables and ``connect(url)``; ``transact`` commits one write transaction before it returns.
* ``service``: the protocol (qualification, overlap, hidden gold, audits), import and export; the API, the web UI
  and the commands all call it.
* ``api``: ``create_app(db_url, ...)``, the JSON API (``/api/...``, Bearer tokens); ``web`` adds the HTML pages.
* ``commands``: ``saferlhf annotate serve | users add | users list | users disable | import | export``.

Nothing is imported here: ``import saferlhf`` must not pull in fastapi or sqlalchemy (the ``annotate`` extra).
"""
