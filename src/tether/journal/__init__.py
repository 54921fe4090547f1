"""The journal: a run's effects, in order, and replaying them.

Layout: ``_journal.py`` (``RunJournal``: the replay cursor and the writes of one run).
The journal does not know what tools or models are; the runtime tells it kinds, names and
digests, and gets back recorded outcomes.
"""

from tether.journal._journal import RunJournal, describe

__all__ = ["RunJournal", "describe"]
