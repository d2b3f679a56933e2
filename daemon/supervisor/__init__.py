"""ccmitmd, the process: start and stop order, reload, signals, sd_notify, the control handlers, jobs."""
