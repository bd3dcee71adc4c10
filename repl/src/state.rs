//! The states a resource, its disk and its peers can be in, named as DRBD names them (so
//! `oxadm status` reads like `drbdadm status`).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
    Unknown,
}

impl Role {
    pub fn to_wire(self) -> u8 {
        match self {
            Role::Primary => 1,
            Role::Secondary => 2,
            Role::Unknown => 0,
        }
    }
    pub fn from_wire(v: u8) -> Role {
        match v {
            1 => Role::Primary,
            2 => Role::Secondary,
            _ => Role::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    Diskless,
    Attaching,
    Failed,
    Inconsistent,
    Outdated,
    DUnknown,
    Consistent,
    UpToDate,
}

impl DiskState {
    pub fn to_wire(self) -> u8 {
        self as u8
    }
    pub fn from_wire(v: u8) -> DiskState {
        use DiskState::*;
        [
            Diskless,
            Attaching,
            Failed,
            Inconsistent,
            Outdated,
            DUnknown,
            Consistent,
            UpToDate,
        ]
        .get(v as usize)
        .copied()
        .unwrap_or(DUnknown)
    }
}

/// Per-peer connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    StandAlone,
    Connecting,
    Connected,
    Disconnecting,
}

/// Per-peer replication state once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplState {
    Off,
    Established,
    SyncSource,
    SyncTarget,
    VerifyS,
    VerifyT,
}

macro_rules! display_as_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_as_debug!(Role, DiskState, ConnState, ReplState);
