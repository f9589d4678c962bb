"""What every part of BN Lab needs: the config and its validation, the errors a user
meets, the backend chooser, the console, signals, and run directories (their files,
atomic writes, meta.json). Imports nothing else of the package."""
