"""What every stage uses and nothing heavy: the typed params (`config`), the error types
(`errors`), atomic writes (`io`) and the stage entry points (`cli`). No torch."""
