"""The job queue runner and its handlers (import, AutoML jobs, scoring, export), outside the studio's process."""
