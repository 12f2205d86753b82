"""The data stages' code: bringing the datasets (synthetic generator, downloads, local
roots; `fetch`) and turning them into split lists and label maps (`preprocess`)."""
