# A deliberately slow, single-threaded web process that reports its own listen queue.
# Raindrops::Linux.tcp_listener_stats asks the kernel over netlink (inet_diag):
#   active = connections accepted and being served, queued = waiting in the accept queue.
require "socket"
require "raindrops"

PORT  = Integer(ENV.fetch("PORT", "5000"))
DYNO  = ENV.fetch("DYNO", "local")
DELAY = Float(ENV.fetch("DELAY", "1"))  # seconds spent on each request
ADDR  = "0.0.0.0:#{PORT}"
$stdout.sync = true  # stdout lines are the app's log lines

def stats
  s = Raindrops::Linux.tcp_listener_stats([ADDR])[ADDR]
  "active=#{s.active} queued=#{s.queued}"
end

trap("TERM") { puts "#{DYNO}: SIGTERM, shutting down"; exit 0 }

server = TCPServer.new("0.0.0.0", PORT)
server.listen(64)  # backlog: up to 64 connections wait here while we are busy
puts "#{DYNO}: listening on #{ADDR} (#{DELAY}s per request), #{stats}"

loop do
  client = server.accept
  begin
    next unless IO.select([client], nil, nil, 5)  # a silent client gets 5 s, then is dropped
    method, path = client.gets.to_s.split(" ", 3)
    while (line = client.gets) && line != "\r\n"; end  # skip the headers
    sleep DELAY  # the "work"; meanwhile new connections queue in the kernel
    if method == "GET" && %w[/ /stats].include?(path)
      status, body = "200 OK", "#{stats}\n"  # measured now, with this request still active
    else
      status, body = "404 Not Found", "not found\n"
    end
    client.write "HTTP/1.1 #{status}\r\nContent-Type: text/plain\r\n" \
                 "Content-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n#{body}"
    puts %(#{client.remote_address.ip_address} "#{method} #{path}" #{status[0, 3]} #{body.chomp})
  rescue SystemCallError, IOError => e
    puts "#{DYNO}: client error: #{e.class}: #{e.message}"
  ensure
    client.close
  end
end
