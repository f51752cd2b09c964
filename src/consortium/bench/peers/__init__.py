"""The reference workload and the peer runners that `consortium bench sim` measures our engines against.

Every module here needs only numpy, torch and scikit-learn, never ``consortium``: the Flower runner executes in
a separate virtual environment (one with flwr) that does not have the project installed, and imports
:mod:`workload` as a sibling module.
"""
