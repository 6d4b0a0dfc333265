"""Machine-learning side of the workbench: arrays in, arrays out.

Backbones and embedding (`backbones`, `embedding`), heads (`heads`), metrics (`metrics`) and selection
strategies (`strategies`). Nothing here touches the database, the web UI or the `storage`/`app` packages.
Submodules are imported on demand so that `import learners.metrics` does not pull in torch.
"""
