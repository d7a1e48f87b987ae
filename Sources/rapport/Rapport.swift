@main
struct Rapport {
    static func main() { print("rapport: not yet") }
}
