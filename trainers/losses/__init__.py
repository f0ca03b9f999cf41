"""Losses of the Emotional Retrieval Module, one a file: ERT (Eq. 2), SSC (Eq. 3) and the joint loss (Eq. 4)."""
