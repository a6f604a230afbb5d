//! Table-driven tests of the decision core: every rule, every threshold at its boundary. One file
//! per area; the builders are the core's fixtures.

use jiff::{SignedDuration, Timestamp};
use modelrollout_api::conditions::{reasons, types};
use modelrollout_api::*;
use modelrollout_core::fixtures::*;
use modelrollout_core::*;

mod acceptance_holds;
mod advancing;
mod after_promotion;
mod events;
mod experiments;
mod gate_boundaries;
mod gating_webhooks;
mod holds;
mod inconclusive;
mod no_gates;
mod on_call_operations;
mod pausing;
mod readiness;
mod rolling_back;
mod sequential_judge;
mod stage_gates;
mod time;
mod versions;
