/// What a request needs access to, in the token scope grammar: `repository:NAME:pull` or
/// `repository:NAME:pull,push`, possibly several (a cross-repository mount also needs `pull` on
/// the source).
public struct AuthScope: Sendable, Hashable, CustomStringConvertible {
    /// The scope strings, sorted.
    public let scopes: [String]

    /// The given scope strings (duplicates dropped).
    public init(_ scopes: [String]) { self.scopes = Array(Set(scopes)).sorted() }

    /// `repository:NAME:pull`.
    public static func pull(_ repository: String) -> AuthScope { AuthScope(["repository:\(repository):pull"]) }
    /// `repository:NAME:pull,push`.
    public static func push(_ repository: String) -> AuthScope { AuthScope(["repository:\(repository):pull,push"]) }

    /// This scope plus pull access to `repository`.
    public func addingPull(_ repository: String) -> AuthScope { AuthScope(scopes + ["repository:\(repository):pull"]) }

    public var description: String { scopes.joined(separator: " ") }

    /// Whether `scope` (`type:name:actions`) asks for nothing these scopes do not already have.
    func covers(_ scope: String) -> Bool {
        let (resource, actions) = Self.split(scope)
        return scopes.contains { mine in
            let (myResource, myActions) = Self.split(mine)
            return myResource == resource && actions.isSubset(of: myActions)
        }
    }

    private static func split(_ scope: String) -> (String, Set<Substring>) {
        guard let colon = scope.lastIndex(of: ":") else { return (scope, []) }
        return (String(scope[..<colon]), Set(scope[scope.index(after: colon)...].split(separator: ",")))
    }
}
