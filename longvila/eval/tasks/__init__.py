"""Sources of the local lmms-eval tasks: copied into a task folder by `longvila.eval.localmc.write_task`."""
