"""pgkd: Performance-Guided LLM Knowledge Distillation (Di Palo, Singhi, Fadlallah; arXiv 2411.05045).

    import pgkd
    model = pgkd.load("outputs/runs/.../seed0-1a2b3c4d5e")   # a run dir or its model/ folder
    model.predict(["Stocks rallied after the Fed's decision"])
"""

__version__ = "0.1.0"
__all__ = ["load", "Classifier", "__version__"]


def __getattr__(name: str):
    # lazy: `import pgkd` (every entry script) must not pull in torch before Hydra has parsed --help
    if name in ("load", "Classifier"):
        from pgkd import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'pgkd' has no attribute {name!r}")
