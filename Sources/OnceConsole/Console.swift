import Foundation
import Hummingbird
import Logging
import Mustache
import NIOCore
import OnceDomain
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres
import OnceSchema

/// The operator console: server-rendered pages over the operations API, mounted under
/// `/console` on a Hummingbird router (`once run`'s HTTP endpoint, or `once console`'s own).
///
/// Pages are read-only and served to whoever reaches the listener; actions (retry, discard,
/// offset resets) are POSTs that `ConsoleAccess` lets through only with the operator token and,
/// for a browser session, the session's CSRF token. Every value on a page is HTML-escaped by
/// the templates (`ConsoleTemplates`).
///
/// Threading: `Sendable`; request handlers share it. Database work runs on the console's own
/// `PostgresSession` (its own thread, never the cooperative pool), one statement sequence at a
/// time; the broker is asked through one `KafkaAdmin`, when a broker is configured.
/// Ownership: `connect` opens both; `close()` ends them (after the server stopped).
/// Errors: `connect` throws `ConsoleError`; a page whose query fails answers 503 with one line.
public final class Console: Sendable {
    public let configuration: ConsoleConfiguration
    let access: ConsoleAccess
    let database: PostgresSession
    let admin: KafkaAdmin?
    let retry: DeadLetterRetry
    let logger: Logger

    init(
        configuration: ConsoleConfiguration, access: ConsoleAccess, database: PostgresSession, admin: KafkaAdmin?,
        logger: Logger
    ) {
        self.configuration = configuration
        self.access = access
        self.database = database
        self.admin = admin
        var registry = HandlerRegistry()
        Domain.register(into: &registry)
        retry = DeadLetterRetry(
            consumerGroup: configuration.consumerGroup, registry: registry,
            deadLetterTopic: configuration.deadLetterTopic)
        self.logger = logger
    }

    /// Opens the console's database session (and its broker client, when `brokers` is set).
    public static func connect(configuration: ConsoleConfiguration, databaseURL: String, logger: Logger) async throws
        -> Console
    {
        let database: PostgresSession
        do {
            database = try await PostgresSession.connect(
                configuration: PostgresConfiguration(
                    url: databaseURL, connectTimeout: .seconds(5), applicationName: "once-console"),
                logger: logger, threadName: "once-console-db")
        } catch {
            throw ConsoleError.databaseUnreachable(ConsoleText.clipped("\(error)", 300))
        }
        var admin: KafkaAdmin?
        if let brokers = configuration.brokers {
            do {
                var quiet = Logger(label: "once.console.kafka")
                quiet.logLevel = .critical
                admin = try await KafkaAdmin(
                    bootstrapServers: brokers, properties: configuration.kafkaProperties, logger: quiet)
            } catch {
                await database.close()
                throw ConsoleError.brokerSettings(ConsoleText.clipped("\(error)", 300))
            }
        }
        return Console(
            configuration: configuration, access: ConsoleAccess(token: configuration.token), database: database,
            admin: admin, logger: logger)
    }

    /// Ends the database session and the broker client.
    public func close() async {
        await admin?.close()
        await database.close()
    }

    /// Adds every console route under `/console` (and `/` → `/console` when `root` is true).
    public func addRoutes(to router: Router<BasicRequestContext>, root: Bool = false) {
        if root { router.get("/") { _, _ in Response.redirect(to: "/console", type: .found) } }
        router.get("console") { request, _ in await self.page { try await self.overview(request) } }
        router.get("console/throughput") { request, _ in await self.page { try await self.throughput(request) } }
        router.get("console/outcomes") { request, _ in await self.page { try await self.outcomes(request) } }
        router.get("console/audit") { request, _ in await self.page { try await self.audit(request) } }
        router.get("console/dead-letters") { request, _ in await self.page { try await self.deadLetters(request) } }
        router.get("console/dead-letters/:id") { request, context in
            await self.page { try await self.deadLetter(request, id: context.parameters.get("id", as: Int64.self)) }
        }
        router.post("console/dead-letters/:id/retry") { request, context in
            await self.action(request) { form, actor in
                try await self.retryDeadLetter(request, id: context.parameters.get("id", as: Int64.self), actor: actor)
            }
        }
        router.get("console/login") { request, _ in self.render("login", self.base(request, title: "Log in")) }
        router.post("console/login") { request, _ in await self.login(request) }
        router.post("console/logout") { request, _ in
            await self.action(request) { _, _ in
                var response = Response.redirect(to: "/console", type: .normal)
                response.setCookie(
                    Cookie(
                        name: ConsoleAccess.cookieName, value: "", maxAge: 0, path: "/console", httpOnly: true,
                        sameSite: .strict))
                return response
            }
        }
        addOperationsRoutes(to: router)
    }

    // MARK: - Rendering

    static let navigation: [(href: String, label: String)] = [
        ("/console", "Overview"), ("/console/throughput", "Throughput"), ("/console/outcomes", "Outcomes"),
        ("/console/dead-letters", "Dead letters"), ("/console/offsets", "Offsets"), ("/console/replays", "Replays"),
        ("/console/audit", "Credit audit"),
    ]

    /// The context every page's layout needs: title, navigation, who is logged in.
    func base(_ request: Request, title: String, current: String? = nil) -> [String: Any] {
        var context: [String: Any] = [
            "title": title, "group": configuration.consumerGroup, "actionsEnabled": access.actionsEnabled,
            "nav": Self.navigation.map { item -> [String: Any] in
                ["href": item.href, "label": item.label, "current": item.href == current]
            },
        ]
        if let session = session(of: request) {
            context["session"] = ["operatorName": session.operatorName, "csrf": access.csrfToken(for: session)]
            context["csrf"] = access.csrfToken(for: session)
            context["canAct"] = true
        }
        return context
    }

    func session(of request: Request) -> ConsoleSession? {
        access.session(fromCookie: request.cookies[ConsoleAccess.cookieName]?.value)
    }

    func render(_ template: String, _ context: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        let html = ConsoleTemplates.library.render(context, withTemplate: template) ?? "template \(template) is missing"
        return Self.html(html, status: status)
    }

    static func html(_ text: String, status: HTTPResponse.Status) -> Response {
        Response(
            status: status,
            headers: [
                .contentType: "text/html; charset=utf-8",
                .contentSecurityPolicy:
                    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                .xContentTypeOptions: "nosniff",
                .cacheControl: "no-store",
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    func message(_ request: Request, status: HTTPResponse.Status, heading: String, text: String, back: String? = nil)
        -> Response
    {
        var context = base(request, title: heading)
        context["heading"] = heading
        context["text"] = text
        context["back"] = back
        return render("message", context, status: status)
    }

    /// Runs a page; a failure becomes a 503 page with one line.
    func page(_ body: () async throws -> Response) async -> Response {
        do {
            return try await body()
        } catch let error as ConsolePageError {
            return Self.html(Self.plainPage(error.heading, error.text), status: error.status)
        } catch {
            logger.warning("console page failed: \(error)")
            return Self.html(
                Self.plainPage("The console could not read this", ConsoleText.clipped("\(error)", 400)),
                status: .serviceUnavailable)
        }
    }

    static func plainPage(_ heading: String, _ text: String) -> String {
        ConsoleTemplates.library.render(
            ["title": heading, "heading": heading, "text": text, "actionsEnabled": true,
             "nav": navigation.map { ["href": $0.href, "label": $0.label] }],
            withTemplate: "message") ?? text
    }

    /// Runs an action after `ConsoleAccess` allowed it: 401 without valid credentials, 403 for
    /// a forged form or when actions are disabled; nothing runs in those cases.
    func action(_ request: Request, _ body: (ConsoleForm, String) async throws -> Response) async -> Response {
        var request = request
        let form: ConsoleForm
        do {
            let buffer = try await request.collectBody(upTo: 4 << 20)
            form = ConsoleForm(encoded: String(buffer: buffer))
        } catch {
            return message(request, status: .contentTooLarge, heading: "Refused", text: "the form is too large")
        }
        let decision = access.authorize(
            origin: request.headers[.origin], host: request.head.authority,
            bearer: request.headers[.authorization], cookie: request.cookies[ConsoleAccess.cookieName]?.value,
            csrf: form["csrf"])
        switch decision {
        case .disabled:
            return message(
                request, status: .forbidden, heading: "Actions are disabled",
                text: "No operator token is set: start the console with \(ConsoleConfiguration.tokenVariable) in its environment to enable actions.")
        case .unauthorized(let why):
            var response = message(request, status: .unauthorized, heading: "Not authorized", text: why, back: "/console/login")
            response.headers[.wwwAuthenticate] = "Bearer realm=\"once console\""
            return response
        case .forbidden(let why):
            return message(request, status: .forbidden, heading: "Refused", text: why)
        case .allowed(let actor):
            do {
                return try await body(form, actor)
            } catch let error as ConsolePageError {
                return message(request, status: error.status, heading: error.heading, text: error.text)
            } catch {
                logger.warning("console action failed: \(error)")
                return message(
                    request, status: .serviceUnavailable, heading: "The action failed",
                    text: ConsoleText.clipped("\(error)", 400))
            }
        }
    }

    func login(_ request: Request) async -> Response {
        var request = request
        guard let buffer = try? await request.collectBody(upTo: 64 << 10) else {
            return message(request, status: .contentTooLarge, heading: "Refused", text: "the form is too large")
        }
        let form = ConsoleForm(encoded: String(buffer: buffer))
        guard access.actionsEnabled else {
            return message(
                request, status: .forbidden, heading: "Actions are disabled",
                text: "No operator token is set: start the console with \(ConsoleConfiguration.tokenVariable) in its environment to enable actions.")
        }
        if let origin = request.headers[.origin],
            !ConsoleAccess.sameOrigin(origin, host: request.head.authority)
        {
            return message(request, status: .forbidden, heading: "Refused", text: "the login comes from another origin")
        }
        guard access.accepts(token: form["token"] ?? "") else {
            var context = base(request, title: "Log in")
            context["error"] = "That is not the operator token."
            return render("login", context, status: .unauthorized)
        }
        let cookie = access.newSession(operator: form["operator"] ?? "")
        var response = Response.redirect(to: "/console", type: .normal)
        response.setCookie(
            Cookie(
                name: ConsoleAccess.cookieName, value: cookie, maxAge: Int(ConsoleAccess.sessionLifetime),
                path: "/console", httpOnly: true, sameSite: .strict))
        logger.info("console: operator \(ConsoleAccess.operatorName(form["operator"] ?? "")) logged in")
        return response
    }

    func query(_ request: Request) -> ConsoleForm {
        ConsoleForm(encoded: request.uri.query ?? "")
    }
}

/// A page or action that cannot be answered, with the status and one line to show.
struct ConsolePageError: Error {
    var status: HTTPResponse.Status
    var heading: String
    var text: String

    /// Dead letter `id` is not this group's: none has that id, or another group's has.
    static func noDeadLetter(_ id: Int64, otherGroup: String? = nil) -> ConsolePageError {
        ConsolePageError(
            status: .notFound, heading: "No such dead letter",
            text: otherGroup.map { "dead letter \(id) belongs to group \($0)" } ?? "there is no dead letter \(id)")
    }
}

/// Why the console cannot start.
public enum ConsoleError: Error, CustomStringConvertible {
    case databaseUnreachable(String)
    case brokerSettings(String)
    case cannotListen(address: String, reason: String)
    case refusedAddress(String)

    public var description: String {
        switch self {
        case .databaseUnreachable(let why): return "the console cannot reach the database: \(why)"
        case .brokerSettings(let why): return "the console cannot use the broker settings: \(why)"
        case .cannotListen(let address, let reason): return "the console cannot listen on \(address): \(reason)"
        case .refusedAddress(let line): return line
        }
    }
}
