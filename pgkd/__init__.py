"""pgkd: Performance-Guided LLM Knowledge Distillation (Di Palo, Singhi, Fadlallah; arXiv 2411.05045)."""

__version__ = "0.1.0"
