//! The one error type that crosses Neutrino's layers.
//!
//! Each variant is a Neutron exception class: its name is the `type` of the
//! `NeutronError` body and its `#[error]` text is the `message`. The API layer
//! maps variants to HTTP statuses in exactly one place (`neutrino_api::error`).
//! Internal failures (database, I/O) never carry their detail to clients.

use std::borrow::Cow;

/// The broad kind of an [`Error`], which decides the answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PreconditionFailed,
    TooLarge,
    Internal,
    NotImplemented,
    Unavailable,
}

/// What a request did wrong, or why the server refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // ---- 400 -----------------------------------------------------------
    /// Generic malformed request (bad JSON, envelope, unknown attributes).
    #[error("{0}")]
    BadRequest(String),
    /// Attribute validation failure: "Invalid input for X. Reason: ...".
    #[error("Invalid input for {attribute}. Reason: {reason}.")]
    InvalidAttribute { attribute: String, reason: String },
    /// Business-rule validation failure.
    #[error("Invalid input for operation: {0}.")]
    InvalidInput(String),
    #[error("The allocation pool {pool} spanning beyond the subnet cidr {cidr}.")]
    OutOfBoundsAllocationPool { pool: String, cidr: String },
    #[error("The allocation pool {0} is not valid.")]
    InvalidAllocationPool(String),
    #[error("Gateway is not valid on subnet.")]
    GatewayInvalid,
    #[error("Unable to complete operation for {subnet}. The number of DNS nameservers exceeds the limit {limit}.")]
    DnsNameServersExhausted { subnet: String, limit: usize },
    #[error("Unable to complete operation for {subnet}. The number of host routes exceeds the limit {limit}.")]
    HostRoutesExhausted { subnet: String, limit: usize },
    #[error("IP address {ip} is not a valid IP for the specified subnet.")]
    InvalidIpForSubnet { ip: String },
    #[error("IP address {ip} is not a valid IP for any of the subnets on the specified network.")]
    InvalidIpForNetwork { ip: String },
    #[error(
        "IPv6 address {ip} cannot be directly assigned to a port on subnet {subnet} as the subnet is configured for automatic addresses"
    )]
    AllocationOnAutoAddressSubnet { ip: String, subnet: String },
    #[error("Illegal prefix bounds: {0}.")]
    IllegalSubnetPoolPrefixBounds(String),
    #[error("Illegal subnetpool prefix update: {0}.")]
    IllegalSubnetPoolPrefixUpdate(String),
    #[error("Various prefix versions are used in subnetpool: {0}.")]
    PrefixVersionMismatch(String),
    #[error("Subnets hosted on the same network must be allocated from the same subnet pool.")]
    NetworkSubnetPoolAffinityError,
    #[error("Unable to delete subnet pool: {0}.")]
    SubnetPoolDeleteError(String),
    #[error("Port Security must be enabled in order to have allowed address pairs on a port.")]
    AddressPairAndPortSecurityRequired,
    #[error("Port security must be enabled and port must have an IP address in order to use security groups.")]
    PortSecurityAndIpRequiredForSecurityGroups,
    #[error(
        "Port has security group associated. Cannot disable port security or ip address until security group is removed"
    )]
    PortSecurityPortHasSecurityGroup,
    #[error("Port {port} cannot be deleted directly via the port API: has device owner {owner}.")]
    ServicePortInUse { port: String, owner: String },
    #[error("Failed to update port {port} because port_security_enabled can not be disabled with IPv4 address change.")]
    IpAddressChangeNotAllowed { port: String },
    /// Used by `X-Openstack-Request-Id`-less clients sending a `DELETE` body.
    #[error("Request body is not supported in DELETE.")]
    DeleteBodyNotSupported,

    // ---- 403 -----------------------------------------------------------
    #[error("({0}) is disallowed by policy")]
    PolicyNotAuthorized(String),

    // ---- 404 -----------------------------------------------------------
    /// A resource that does not exist or that the caller may not see.
    #[error("{kind} {id} could not be found.")]
    NotFound { kind: ResourceKind, id: String },
    /// Unknown URL or an object hidden by policy without a specific class.
    #[error("The resource could not be found.")]
    HttpNotFound,
    #[error("AvailabilityZone {0} could not be found.")]
    AvailabilityZoneNotFound(String),
    #[error("Tag {tag} could not be found for {resource} {id}.")]
    TagNotFound { tag: String, resource: String, id: String },

    // ---- 405 -----------------------------------------------------------
    #[error("The method is not allowed for the requested URL.")]
    MethodNotAllowed,

    // ---- 409 -----------------------------------------------------------
    #[error(
        "Unable to complete operation on network {network}. There are one or more ports still in use on the network, id for these ports is: {ports}."
    )]
    NetworkInUse { network: String, ports: String },
    #[error(
        "Unable to complete operation on subnet {subnet}: One or more ports have an IP allocation from this subnet."
    )]
    SubnetInUse { subnet: String },
    #[error("IP address {ip} already allocated in subnet {subnet}")]
    IpAddressAlreadyAllocated { ip: String, subnet: String },
    #[error("No more IP addresses available on network {0}.")]
    IpAddressGenerationFailure(String),
    #[error("No valid service subnet for the given device owner, network {network}, device owner {owner}.")]
    NoValidServiceSubnet { network: String, owner: String },
    #[error("Unable to complete operation for network {network}. The mac address {mac} is in use.")]
    MacAddressInUse { network: String, mac: String },
    #[error("Quota exceeded for resources: {0}.")]
    OverQuota(String),
    #[error("Found overlapping allocation pools: {0}.")]
    OverlappingAllocationPools(String),
    #[error("Gateway ip {gateway} conflicts with allocation pool {pool}.")]
    GatewayConflictWithAllocationPools { gateway: String, pool: String },
    #[error("Unable to create the flat network. Physical network {0} is in use.")]
    FlatNetworkInUse(String),
    #[error("Unable to create the network. The VLAN {vlan} on physical network {physnet} is in use.")]
    VlanIdInUse { vlan: i64, physnet: String },
    #[error("Unable to create the network. The tunnel ID {0} is in use.")]
    TunnelIdInUse(i64),
    #[error("Segment '{0}' cannot be deleted while it is in use by subnets.")]
    SegmentInUse(String),
    #[error("Unable to reconfigure sharing settings for network {0}. Multiple tenants are using it.")]
    InvalidSharedSetting(String),
    #[error("Port {port} has owner {owner} and therefore cannot be updated: {reason}")]
    UnsupportedPortDeviceOwner { port: String, owner: String, reason: String },
    #[error(
        "Unable to complete operation on port {port}, port is already bound, port type: {vif_type}, old_mac {old_mac}, new_mac {new_mac}."
    )]
    PortBound { port: String, vif_type: String, old_mac: String, new_mac: String },
    #[error("Requested MTU {mtu} is too small for the subnets of network {network}: {reason}")]
    NetworkMtuSubnetConflict { network: String, mtu: i64, reason: String },
    #[error("Unable to allocate subnet from the pool: {0}")]
    SubnetAllocationError(String),
    #[error("Per-project subnet pool prefix quota exceeded: {0}")]
    SubnetPoolQuotaExceeded(String),
    #[error("{0}")]
    Conflict(String),

    // ---- security groups ---------------------------------------------
    #[error("Default security group already exists.")]
    SecurityGroupDefaultAlreadyExists,
    #[error("Updating default security group not allowed.")]
    SecurityGroupCannotUpdateDefault,
    #[error("Insufficient rights for removing default security group.")]
    SecurityGroupCannotRemoveDefault,
    #[error("Security Group {0} in use.")]
    SecurityGroupInUse(String),
    #[error("Security group rule already exists. Rule id is {0}.")]
    SecurityGroupRuleExists(String),
    #[error("Duplicate Security Group Rule in POST.")]
    DuplicateSecurityGroupRuleInPost,
    #[error(
        "Security group rule protocol {protocol} not supported. Only protocol values {allowed} and integer representations [0 to 255] are supported."
    )]
    SecurityGroupRuleInvalidProtocol { protocol: String, allowed: String },
    #[error("{0}")]
    SecurityGroupRuleInvalid(String),

    // ---- routers and floating IPs ------------------------------------
    #[error("Router {router} still has ports. {detail}")]
    RouterInUse { router: String, detail: String },
    #[error("Router {router} does not have an interface with id {port}")]
    RouterInterfaceNotFound { router: String, port: String },
    #[error("Router {router} has no interface on subnet {subnet}")]
    RouterInterfaceNotFoundForSubnet { router: String, subnet: String },
    #[error(
        "Gateway cannot be updated for router {router}, since a gateway to external network {network} is required by one or more floating IPs."
    )]
    RouterExternalGatewayInUseByFloatingIp { router: String, network: String },
    #[error("Cannot remove the interface of router {router} on subnet {subnet}: floating IPs need it.")]
    RouterInterfaceInUseByFloatingIp { router: String, subnet: String },
    #[error(
        "Router interface for subnet {subnet} on router {router} cannot be deleted, as it is required by one or more routes."
    )]
    RouterInterfaceInUseByRoute { router: String, subnet: String },
    #[error(
        "External network {network} is not reachable from subnet {subnet}.  Therefore, cannot associate Port {port} with a Floating IP."
    )]
    ExternalGatewayForFloatingIpNotFound { network: String, subnet: String, port: String },
    #[error(
        "Cannot associate floating IP {floating_ip} ({fip_id}) with port {port} using fixed IP {fixed_ip}, as that fixed IP already has a floating IP on external network {network}."
    )]
    FloatingIpPortAlreadyAssociated {
        floating_ip: String,
        fip_id: String,
        port: String,
        fixed_ip: String,
        network: String,
    },
    #[error("Unable to find any IP address on external network {0}.")]
    ExternalIpAddressExhausted(String),
    #[error(
        "Unable to complete operation on port {port} for network {network}. Port already has an attached device {device}."
    )]
    PortInUse { port: String, network: String, device: String },
    #[error("External network {0} cannot be made internal: routers use it as their gateway.")]
    ExternalNetworkInUse(String),
    #[error("Current gateway ip {ip} already in use by port {port}. Unable to update.")]
    GatewayIpInUse { ip: String, port: String },

    #[error("The following device_id {0} is not owned by your project or matches another project's router.")]
    DeviceIdNotOwnedByTenant(String),

    // ---- RBAC --------------------------------------------------------
    #[error("RBAC policy on object {object} cannot be removed because other objects depend on it.\nDetails: {details}")]
    RbacPolicyInUse { object: String, details: String },

    // ---- 412 -----------------------------------------------------------
    #[error("Constrained to {expected}, but current revision is {current}")]
    RevisionMismatch { expected: i64, current: i64 },

    // ---- 413 -----------------------------------------------------------
    #[error("Request body is too large.")]
    RequestTooLarge,

    // ---- 501 / 503 ---------------------------------------------------
    #[error("Not implemented: {0}")]
    NotImplemented(String),
    #[error("Unable to create the network. No project network is available for allocation.")]
    NoNetworkAvailable,
    #[error("Unable to generate unique mac on network {0}.")]
    MacAddressGenerationFailure(String),
    // ---- the agent channel ---------------------------------------------
    #[error("Host {0} is not registered; register first.")]
    HostNotRegistered(String),
    #[error("A valid agent token is required.")]
    AgentNotAuthenticated,
    #[error(
        "The agent speaks agent channel contract {agent} but this server speaks {server}: run an agent and a server of the same release."
    )]
    AgentContractMismatch { agent: u32, server: u32 },
    /// The server cannot answer yet (starting, or catching up).
    #[error("Service unavailable: {0}")]
    ServiceUnavailable(String),
    /// A failure of the server itself; the detail is logged, never shown.
    #[error("Request Failed: internal server error while processing your request.")]
    Internal(String),
}

impl Error {
    /// Shorthand for an attribute validation failure.
    pub fn attr(attribute: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidAttribute { attribute: attribute.into(), reason: reason.into() }
    }

    pub fn not_found(kind: ResourceKind, id: impl ToString) -> Self {
        Error::NotFound { kind, id: id.to_string() }
    }

    pub fn policy(rule: impl Into<String>) -> Self {
        Error::PolicyNotAuthorized(format!("rule:{}", rule.into()))
    }

    /// The Neutron exception class name, the `type` of the error body.
    pub fn type_name(&self) -> Cow<'static, str> {
        use Error::*;
        Cow::Borrowed(match self {
            BadRequest(_) | InvalidAttribute { .. } | DeleteBodyNotSupported => "HTTPBadRequest",
            InvalidInput(_) => "InvalidInput",
            OutOfBoundsAllocationPool { .. } => "OutOfBoundsAllocationPool",
            InvalidAllocationPool(_) => "InvalidAllocationPool",
            GatewayInvalid => "InvalidInput",
            DnsNameServersExhausted { .. } => "DNSNameServersExhausted",
            HostRoutesExhausted { .. } => "HostRoutesExhausted",
            InvalidIpForSubnet { .. } => "InvalidIpForSubnet",
            InvalidIpForNetwork { .. } => "InvalidIpForNetwork",
            AllocationOnAutoAddressSubnet { .. } => "AllocationOnAutoAddressSubnet",
            IllegalSubnetPoolPrefixBounds(_) => "IllegalSubnetPoolPrefixBounds",
            IllegalSubnetPoolPrefixUpdate(_) => "IllegalSubnetPoolPrefixUpdate",
            PrefixVersionMismatch(_) => "PrefixVersionMismatch",
            NetworkSubnetPoolAffinityError => "NetworkSubnetPoolAffinityError",
            SubnetPoolDeleteError(_) => "SubnetPoolDeleteError",
            AddressPairAndPortSecurityRequired => "AddressPairAndPortSecurityRequired",
            PortSecurityAndIpRequiredForSecurityGroups => "PortSecurityAndIPRequiredForSecurityGroups",
            PortSecurityPortHasSecurityGroup => "PortSecurityPortHasSecurityGroup",
            ServicePortInUse { .. } => "ServicePortInUse",
            IpAddressChangeNotAllowed { .. } => "IPAddressChangeNotAllowed",
            PolicyNotAuthorized(_) => "PolicyNotAuthorized",
            NotFound { kind, .. } => return Cow::Owned(format!("{}NotFound", kind.class())),
            HttpNotFound => "HTTPNotFound",
            AvailabilityZoneNotFound(_) => "AvailabilityZoneNotFound",
            TagNotFound { .. } => "TagNotFound",
            MethodNotAllowed => "HTTPMethodNotAllowed",
            NetworkInUse { .. } => "NetworkInUse",
            SubnetInUse { .. } => "SubnetInUse",
            IpAddressAlreadyAllocated { .. } => "IpAddressAlreadyAllocated",
            IpAddressGenerationFailure(_) | NoValidServiceSubnet { .. } => "IpAddressGenerationFailure",
            MacAddressInUse { .. } => "MacAddressInUse",
            OverQuota(_) => "OverQuota",
            OverlappingAllocationPools(_) => "OverlappingAllocationPools",
            GatewayConflictWithAllocationPools { .. } => "GatewayConflictWithAllocationPools",
            FlatNetworkInUse(_) => "FlatNetworkInUse",
            VlanIdInUse { .. } => "VlanIdInUse",
            TunnelIdInUse(_) => "TunnelIdInUse",
            SegmentInUse(_) => "SegmentInUse",
            InvalidSharedSetting(_) => "InvalidSharedSetting",
            UnsupportedPortDeviceOwner { .. } => "UnsupportedPortDeviceOwner",
            PortBound { .. } => "PortBound",
            NetworkMtuSubnetConflict { .. } => "NetworkMTUSubnetConflict",
            SubnetAllocationError(_) => "SubnetAllocationError",
            SubnetPoolQuotaExceeded(_) => "SubnetPoolQuotaExceeded",
            Conflict(_) => "Conflict",
            SecurityGroupDefaultAlreadyExists => "SecurityGroupDefaultAlreadyExists",
            SecurityGroupCannotUpdateDefault => "SecurityGroupCannotUpdateDefault",
            SecurityGroupCannotRemoveDefault => "SecurityGroupCannotRemoveDefault",
            SecurityGroupInUse(_) => "SecurityGroupInUse",
            SecurityGroupRuleExists(_) => "SecurityGroupRuleExists",
            DuplicateSecurityGroupRuleInPost => "DuplicateSecurityGroupRuleInPost",
            SecurityGroupRuleInvalidProtocol { .. } => "SecurityGroupRuleInvalidProtocol",
            SecurityGroupRuleInvalid(_) => "InvalidInput",
            RouterInUse { .. } => "RouterInUse",
            RouterInterfaceNotFound { .. } => "RouterInterfaceNotFound",
            RouterInterfaceNotFoundForSubnet { .. } => "RouterInterfaceNotFoundForSubnet",
            RouterExternalGatewayInUseByFloatingIp { .. } => "RouterExternalGatewayInUseByFloatingIp",
            RouterInterfaceInUseByFloatingIp { .. } => "RouterInterfaceInUseByFloatingIP",
            RouterInterfaceInUseByRoute { .. } => "RouterInterfaceInUseByRoute",
            ExternalGatewayForFloatingIpNotFound { .. } => "ExternalGatewayForFloatingIPNotFound",
            FloatingIpPortAlreadyAssociated { .. } => "FloatingIPPortAlreadyAssociated",
            ExternalIpAddressExhausted(_) => "ExternalIpAddressExhausted",
            PortInUse { .. } => "PortInUse",
            ExternalNetworkInUse(_) => "ExternalNetworkInUse",
            GatewayIpInUse { .. } => "GatewayIpInUse",
            RbacPolicyInUse { .. } => "RbacPolicyInUse",
            DeviceIdNotOwnedByTenant(_) => "DeviceIDNotOwnedByTenant",
            RevisionMismatch { .. } => "RevisionNumberConstraintFailed",
            RequestTooLarge => "RequestEntityTooLarge",
            NotImplemented(_) => "NotImplementedError",
            NoNetworkAvailable => "NoNetworkAvailable",
            MacAddressGenerationFailure(_) => "MacAddressGenerationFailure",
            HostNotRegistered(_) => "HostNotRegistered",
            AgentNotAuthenticated => "AgentAuthenticationFailed",
            AgentContractMismatch { .. } => "AgentContractMismatch",
            ServiceUnavailable(_) => "ServiceUnavailable",
            Internal(_) => "HTTPInternalServerError",
        })
    }

    /// What kind of failure this is; the API turns classes into HTTP
    /// statuses (`neutrino_api::error`, the only place that knows HTTP).
    pub fn class(&self) -> ErrorClass {
        use Error::*;
        match self {
            BadRequest(_)
            | InvalidAttribute { .. }
            | InvalidInput(_)
            | OutOfBoundsAllocationPool { .. }
            | InvalidAllocationPool(_)
            | GatewayInvalid
            | DnsNameServersExhausted { .. }
            | HostRoutesExhausted { .. }
            | InvalidIpForSubnet { .. }
            | InvalidIpForNetwork { .. }
            | AllocationOnAutoAddressSubnet { .. }
            | IllegalSubnetPoolPrefixBounds(_)
            | IllegalSubnetPoolPrefixUpdate(_)
            | PrefixVersionMismatch(_)
            | NetworkSubnetPoolAffinityError
            | SubnetPoolDeleteError(_)
            | IpAddressChangeNotAllowed { .. }
            | PortSecurityAndIpRequiredForSecurityGroups
            | SecurityGroupRuleInvalidProtocol { .. }
            | SecurityGroupRuleInvalid(_)
            | ExternalIpAddressExhausted(_)
            | DeleteBodyNotSupported => ErrorClass::BadRequest,
            PolicyNotAuthorized(_) => ErrorClass::Forbidden,
            NotFound { .. }
            | HttpNotFound
            | AvailabilityZoneNotFound(_)
            | TagNotFound { .. }
            | RouterInterfaceNotFound { .. }
            | RouterInterfaceNotFoundForSubnet { .. }
            | ExternalGatewayForFloatingIpNotFound { .. }
            | HostNotRegistered(_) => ErrorClass::NotFound,
            MethodNotAllowed => ErrorClass::MethodNotAllowed,
            AddressPairAndPortSecurityRequired
            | PortSecurityPortHasSecurityGroup
            | ServicePortInUse { .. }
            | NetworkInUse { .. }
            | SubnetInUse { .. }
            | IpAddressAlreadyAllocated { .. }
            | IpAddressGenerationFailure(_)
            | NoValidServiceSubnet { .. }
            | MacAddressInUse { .. }
            | OverQuota(_)
            | OverlappingAllocationPools(_)
            | GatewayConflictWithAllocationPools { .. }
            | FlatNetworkInUse(_)
            | VlanIdInUse { .. }
            | TunnelIdInUse(_)
            | SegmentInUse(_)
            | InvalidSharedSetting(_)
            | UnsupportedPortDeviceOwner { .. }
            | PortBound { .. }
            | NetworkMtuSubnetConflict { .. }
            | SubnetAllocationError(_)
            | SubnetPoolQuotaExceeded(_)
            | SecurityGroupDefaultAlreadyExists
            | SecurityGroupCannotUpdateDefault
            | SecurityGroupCannotRemoveDefault
            | SecurityGroupInUse(_)
            | SecurityGroupRuleExists(_)
            | DuplicateSecurityGroupRuleInPost
            | RouterInUse { .. }
            | RouterExternalGatewayInUseByFloatingIp { .. }
            | RouterInterfaceInUseByFloatingIp { .. }
            | RouterInterfaceInUseByRoute { .. }
            | FloatingIpPortAlreadyAssociated { .. }
            | PortInUse { .. }
            | ExternalNetworkInUse(_)
            | GatewayIpInUse { .. }
            | RbacPolicyInUse { .. }
            | DeviceIdNotOwnedByTenant(_)
            | Conflict(_)
            | AgentContractMismatch { .. } => ErrorClass::Conflict,
            RevisionMismatch { .. } => ErrorClass::PreconditionFailed,
            RequestTooLarge => ErrorClass::TooLarge,
            AgentNotAuthenticated => ErrorClass::Unauthorized,
            Internal(_) => ErrorClass::Internal,
            NotImplemented(_) => ErrorClass::NotImplemented,
            NoNetworkAvailable | MacAddressGenerationFailure(_) | ServiceUnavailable(_) => ErrorClass::Unavailable,
        }
    }
}

/// Resource kinds, for `<Kind>NotFound` errors and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Network,
    Subnet,
    Port,
    Segment,
    SubnetPool,
    SecurityGroup,
    Project,
    User,
    Role,
    Quota,
    SecurityGroupRule,
    Router,
    FloatingIp,
    PortForwarding,
    Agent,
    RbacPolicy,
}

impl ResourceKind {
    /// The prefix of the exception class name (`NetworkNotFound`).
    pub fn class(self) -> &'static str {
        match self {
            ResourceKind::Network => "Network",
            ResourceKind::Subnet => "Subnet",
            ResourceKind::Port => "Port",
            ResourceKind::Segment => "Segment",
            ResourceKind::SubnetPool => "SubnetPool",
            ResourceKind::SecurityGroup => "SecurityGroup",
            ResourceKind::Project => "Project",
            ResourceKind::User => "User",
            ResourceKind::Role => "Role",
            ResourceKind::Quota => "Quota",
            ResourceKind::SecurityGroupRule => "SecurityGroupRule",
            ResourceKind::Router => "Router",
            ResourceKind::FloatingIp => "FloatingIP",
            ResourceKind::PortForwarding => "PortForwarding",
            ResourceKind::Agent => "Agent",
            ResourceKind::RbacPolicy => "RbacPolicy",
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResourceKind::SubnetPool => "Subnet pool",
            ResourceKind::SecurityGroup => "Security group",
            ResourceKind::SecurityGroupRule => "Security group rule",
            ResourceKind::FloatingIp => "Floating IP",
            ResourceKind::PortForwarding => "Port forwarding",
            ResourceKind::RbacPolicy => "RBAC policy",
            other => other.class(),
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
