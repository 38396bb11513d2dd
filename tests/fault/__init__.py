"""The fault, crash and hostile-input battery: real processes killed mid-job, reconciled."""
