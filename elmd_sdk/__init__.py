"""elmd-sdk: emotion-guided multimodal dialogue generation (ELMD, ICMR 2024) for LangChain apps."""

__version__ = "0.1.0"
