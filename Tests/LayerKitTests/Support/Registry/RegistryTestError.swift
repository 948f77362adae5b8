/// A failure of the registry tests' own servers (a registry that did not start, a port not bound).
struct RegistryTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
