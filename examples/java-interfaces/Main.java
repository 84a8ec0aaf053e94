import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.net.SocketException;
import java.nio.charset.StandardCharsets;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Collectors;

/** Serves the dyno's network interfaces, as java.net.NetworkInterface sees them, on $PORT. */
public class Main {
    static final String DYNO = System.getenv().getOrDefault("DYNO", "local");

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "5000"));
        // Enumerate once at boot, as many JVM apps do (UUID/host-id generators, cluster
        // discovery): an old JDK that misparsed the interface list failed right here.
        System.out.println(DYNO + ": " + summary(interfaces()));
        HttpServer server = HttpServer.create(new InetSocketAddress("0.0.0.0", port), 64);
        server.createContext("/", Main::handle);
        server.start();
        System.out.println(DYNO + ": listening on 0.0.0.0:" + port);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> System.out.println(DYNO + ": shutting down")));
    }

    static void handle(HttpExchange ex) throws IOException {
        int status = 200;
        String body;
        if (!ex.getRequestURI().getPath().equals("/")) {
            status = 404;
            body = "not found\n";
        } else {
            try {
                List<NetworkInterface> ifs = interfaces();
                StringBuilder sb = new StringBuilder(summary(ifs)).append('\n');
                for (NetworkInterface i : ifs) sb.append(describe(i)).append('\n');
                body = sb.toString();
            } catch (SocketException e) {
                status = 500;
                body = "NetworkInterface failed: " + e + "\n";
            }
        }
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(bytes);
        }
        String fwd = ex.getRequestHeaders().getFirst("X-Forwarded-For");
        System.out.println(ex.getRemoteAddress().getAddress().getHostAddress() + " fwd=" + (fwd == null ? "-" : fwd)
                + " \"" + ex.getRequestMethod() + " " + ex.getRequestURI() + "\" " + status + " " + bytes.length);
    }

    static List<NetworkInterface> interfaces() throws SocketException {
        return NetworkInterface.networkInterfaces()
                .sorted(Comparator.comparingInt(NetworkInterface::getIndex))
                .collect(Collectors.toList());
    }

    static String summary(List<NetworkInterface> ifs) {
        return "interfaces: " + ifs.stream().map(NetworkInterface::getName).collect(Collectors.joining(" "));
    }

    // e.g. "eth0 index=2 up mtu=1500 addresses=10.213.0.1/32 fe80::1c2:3ff:fe04:506/64"
    static String describe(NetworkInterface i) throws SocketException {
        String addrs = i.getInterfaceAddresses().stream()
                .map(a -> strip(a.getAddress()) + "/" + a.getNetworkPrefixLength())
                .sorted(Comparator.comparing((String s) -> s.contains(":")).thenComparing(s -> s))
                .collect(Collectors.joining(" "));
        return i.getName() + " index=" + i.getIndex() + " " + (i.isUp() ? "up" : "down")
                + " mtu=" + i.getMTU() + " addresses=" + (addrs.isEmpty() ? "-" : addrs);
    }

    static String strip(InetAddress a) { // IPv6 host addresses carry a "%eth0" scope suffix
        String s = a.getHostAddress();
        int pct = s.indexOf('%');
        return pct < 0 ? s : s.substring(0, pct);
    }
}
