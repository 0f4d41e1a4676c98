//! Scaling one object: the per-object loop, a thin executor ([`scale_loop`]) behind small I/O seams
//! ([`io`]); its pure decisions ([`decision`]) and what one tick does, as data ([`outcome`]); and
//! reading and writing the target's replicas ([`targets`]); the scalingModifiers composite
//! ([`composite`]); when a failing trigger is worth a log line ([`failure_log`]). For ScaledJobs: the pure decision
//! of how many Jobs to create ([`jobs`]), the Job each creates ([`job_template`]) and the loop
//! that executes them ([`job_loop`]).

pub mod composite;
pub mod decision;
pub mod failure_log;
pub mod io;
pub mod job_io;
pub mod job_loop;
pub mod job_template;
pub mod jobs;
pub mod outcome;
pub mod scale_loop;
pub mod targets;
