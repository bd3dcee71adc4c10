//! repl_* methods (DRBD's drbdsetup commands, sent by `oxadm`): thin adapters onto
//! `oxstor_repl::rpc`.

use super::params::decode;
use super::{RpcError, RpcResult};
use crate::context::Context;
use oxstor_repl::rpc as repl;
use serde_json::Value;

fn refused(message: String) -> RpcError {
    let errno = if message.contains("does not exist") || message.contains("has no peer") {
        libc::ENODEV
    } else if message.contains("already") {
        libc::EEXIST
    } else {
        libc::EINVAL
    };
    RpcError::errno(errno, message)
}

macro_rules! adapter {
    ($($name:ident => $f:path),* $(,)?) => {$(
        pub fn $name(_: &Context, p: Option<Value>) -> RpcResult {
            $f(decode(p)?).map_err(refused)
        }
    )*};
}

adapter! {
    new_resource => repl::new_resource,
    attach => repl::attach,
    detach => repl::detach,
    new_peer => repl::new_peer,
    new_path => repl::new_path,
    connect => repl::connect,
    disconnect => repl::disconnect,
    primary => repl::primary,
    secondary => repl::secondary,
    down => repl::down,
    verify => repl::verify,
    create_md => repl::create_md,
    new_current_uuid => repl::new_current_uuid,
    status => repl::status,
    wait_sync => repl::wait_sync,
}
