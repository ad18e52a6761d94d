"""The shared training core. Importing it first installs common.errors' Ctrl-C hook, so that an
entry point interrupted while torch still loads ends in one line (every entry point imports
this package before torch: ``python -m common.X`` and each train.py's ``from common import``)."""
from common import errors as _errors  # noqa: F401
