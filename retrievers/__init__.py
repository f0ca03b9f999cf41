"""Emotional Retrieval Module (paper 3.3): SSC encoder, FAISS index storage and the LangChain retriever."""
