"""Language models: load_llm (GGUF cache, ChatGLM2, any causal LM), p-tuning v2 prefix, LangChain chat model."""
