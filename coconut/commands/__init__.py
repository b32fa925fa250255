"""What every command shares below its Hydra shell: the typed configs (`config`)."""
