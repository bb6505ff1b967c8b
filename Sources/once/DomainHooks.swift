import OnceCore
#if canImport(OnceDomain)
import OnceDomain
#endif

/// The domain's migrations and handlers (empty until the domain module is built).
#if canImport(OnceDomain)
let domainMigrations = Domain.migrations
func registerDomain(into registry: inout HandlerRegistry) { Domain.register(into: &registry) }
#else
let domainMigrations: [Migration] = []
func registerDomain(into registry: inout HandlerRegistry) {}
#endif
