"""MLflow: where runs are kept (`store`), the runs of a pipeline (`runs`), metrics that
outlive the server (`spool`), registered models read back and verified (`registry`), and the
UI opened in the right view (`ui`)."""
