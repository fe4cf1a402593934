//! `neutrino-cni`: the CNI plugin as an executable of its own, for a CNI
//! plugin directory (`/usr/lib/cni`, `/opt/cni/bin`). The `neutrino`
//! binary is the same plugin under this name (a link); this one is small
//! and has no server or agent in it.

fn main() {
    std::process::exit(neutrino_cni::plugin::main());
}
