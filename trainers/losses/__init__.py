"""Training losses, one a file: ERT (Eq. 2), SSC (Eq. 3), the joint ERM loss (Eq. 4) and the answer-token NLL of
REP and EERG (Eq. 10, 11)."""
