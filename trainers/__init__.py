"""Training, kept apart from inference: ERM (Eq. 4), REP (Eq. 10) and EERG (Eq. 11)."""
