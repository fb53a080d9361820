//! Live statistics, KS figures, interval reports and staffing advice, computed from the queue log (sans-IO).
