"""Physician rating: the study store, balanced blinded assignment, the rater web app, the long export, and
the judge-vs-physician reliability analysis (`reliability.py`, statistics in `agreement.py`).

    coordinator:  study.create_study ▸ study.add_rater ▸ assign.assign ▸ assign.issue_logins
    raters:       app.create_app (`shicheng rate serve`)
    analysis:     export.write_export ▸ reliability.reliability (`shicheng reliability`)

The server parts need the `rate` extra (sqlalchemy, fastapi, itsdangerous, python-multipart); the
analysis needs pingouin from it too.
"""
